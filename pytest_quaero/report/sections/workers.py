"""Detailed Metrics, second half: Worker Pool Performance and System Throughput."""

from __future__ import annotations

from pytest_quaero.core.settings import format_duration
from pytest_quaero.report.figures import (
    MAX_QUEUE_ROWS,
    ReportFigures,
    Run,
    expected_jobs,
    find_verdict,
    queue_intervals,
    queue_peak,
    section_names,
    stagger_tolerance,
)
from pytest_quaero.report.wording import (
    duration,
    mark,
    names,
    not_measured,
    not_run,
    offset,
    pct,
    plural,
    utc,
    worker_name,
)

__all__ = ["performance_metrics", "queue_statistics", "scalability_analysis", "worker_startup"]


# ---------------------------------------------------------------- Worker Pool Performance


def worker_startup(figures: ReportFigures) -> list[str]:
    """Each run's worker starts against its stagger setting, and each worker's utilization."""
    lines = ["### Worker Pool Performance", "", "#### Worker Startup and Staggering", "```"]
    if not figures.results:
        lines.append(not_measured("no scenario ran, so no worker started (--quaero-scenario)"))
    for i, run in enumerate(figures.runs):
        if i:
            lines.append("")
        lines += _startup(run) + _utilization(run)
    lines += ["```", ""]
    return lines


def _startup(run: Run) -> list[str]:
    r = run.result
    setting = float(r.settings.get("stagger", 0.0))
    verdict = find_verdict(r, "worker_staggering")
    judged = f"{verdict['measured']}, {verdict['required']}" if verdict else "none"
    lines = [f"{run.label} ({r.settings.get('workers')} {r.settings.get('worker_mode')} workers, stagger "
             f"setting {format_duration(setting)}; verdict: {judged}):"]
    pool = r.phase_offset("pool_started") or 0.0
    tolerance = stagger_tolerance(verdict)
    previous: float | None = None
    for worker in sorted(r.workers, key=lambda w: w.index):
        if worker.start_offset is None or worker.started_wall is None:
            lines.append(f"{worker_name(worker)} Startup: " + not_measured(
                f"never started: the run ended ({offset(r.execution_time)}) before its start at "
                f"{worker.index} x {format_duration(setting)}"))
            continue
        line = (f"{worker_name(worker)} Startup: {utc(worker.started_wall, millis=True)} "
                f"({duration(worker.start_offset - pool)} after pool start)")
        if previous is not None:
            gap = worker.start_offset - previous
            # each gap judged as the criterion judges them, so one unstarted worker does not
            # make the gaps that were measured look wrong
            ok = abs(gap - setting) <= tolerance if tolerance is not None else (
                verdict["passed"] if verdict else None)
            line = line[:-1] + f"; {duration(gap)} after the previous worker, setting " \
                f"{format_duration(setting)}: {'stagger confirmed' if ok else 'stagger NOT confirmed'}) {mark(ok)}"
        previous = worker.start_offset
        lines.append(line)
    return lines


def _utilization(run: Run) -> list[str]:
    workers = sorted(run.result.workers, key=lambda w: w.index)
    lines = ["", "Worker Utilization (busy share of each worker's own lifetime):"]
    for worker in workers:
        if worker.start_offset is None:
            lines.append(f"  - {worker_name(worker)}: " + not_measured("the worker never started"))
            continue
        lines.append(f"  - {worker_name(worker)}: {pct(worker.utilization)} ({worker.jobs} jobs, "
                     f"{worker.busy_seconds:.3f}s busy)")
    utilization = [w.utilization for w in workers if w.start_offset is not None and w.jobs]
    idle = [worker_name(w) for w in workers if w.start_offset is not None and not w.jobs]
    left_out = (f"; {names(idle)} left out: started after the queue was empty and processed no job" if idle else "")
    if utilization:
        lines.append(f"  - Average: {pct(sum(utilization) / len(utilization))} (of {len(utilization)} workers that "
                     f"processed jobs{left_out})")
    else:
        lines.append("  - Average: " + not_measured("no worker processed a job"))
    return lines


def queue_statistics(figures: ReportFigures) -> list[str]:
    """Queue length over time, in at most MAX_QUEUE_ROWS steps per run."""
    lines = ["#### Queue Statistics During Test", "```"]
    if not figures.results:
        lines.append(not_measured("no scenario ran, so the queue was never sampled (--quaero-scenario)"))
    for i, run in enumerate(figures.runs):
        if i:
            lines.append("")
        lines += _queue_over_time(run)
    lines += ["```", ""]
    return lines


def _queue_over_time(run: Run) -> list[str]:
    r = run.result
    samples = r.queue_samples
    header = f"{run.label}: Queue Length Over Time"
    if not samples:
        return [header + ":", "  " + not_measured("the run recorded no queue sample")]
    interval, step = queue_intervals(samples)
    end = samples[-1][0]
    peak = queue_peak(r)
    if peak is None:
        return [header + ":", "  " + not_measured(
            f"the run ({duration(r.execution_time)}) was shorter than the sampling interval "
            f"({duration(interval)}): its {plural(len(samples), 'sample')} came before the first send and after the "
            f"last delete, so they saw none of the {r.messages_enqueued} messages that went through the queue")]
    lines = [f"{header} (sampled every {duration(interval)}, {plural(len(samples), 'sample')}; shown every "
             f"{format_duration(step)}, the step that fits the run in at most {MAX_QUEUE_ROWS} rows; the template's "
             "30s for a 5-minute run; each row is the sample nearest its time):"]
    k = 0
    while k * step < end:
        mark_at = k * step
        # the nearest sample, not the last one before the mark: a sample 1 ms late is that moment's count
        sample = min(samples, key=lambda s: (abs(s[0] - mark_at), s[0]))
        lines.append(f"  {offset(mark_at) + ':':<12} {int(sample[1])} messages ({int(sample[2])} visible, "
                     f"{int(sample[3])} in flight; sampled at {offset(sample[0])})")
        k += 1
    left = int(samples[-1][1])
    lines.append(f"  {offset(end)} (end): {left} messages "
                 + ("(all processed)" if left == 0 else f"left ({r.dead_messages} dead)"))
    lines += ["", f"Peak Queue Length: {peak} messages",
              f"Average Queue Length: {r.avg_queue_length:.1f} messages"]
    return lines


# ---------------------------------------------------------------- System Throughput


def performance_metrics(figures: ReportFigures) -> list[str]:
    lines = ["### System Throughput", "", "#### Performance Metrics", "```"]
    for name in section_names(figures.groups):
        runs = figures.groups.get(name, [])
        if not runs:
            lines.append(f"{name.capitalize()} Load ({expected_jobs(name, runs)} jobs):")
            lines += [f"  - {label}: {not_run(name)}" for label in ("Total Time", "Jobs/Second", "95th Percentile")]
            lines.append("  ")
            continue
        for run in runs:
            r = run.result
            lines += [f"{run.label.capitalize()} Load ({r.total_jobs} jobs):",
                      f"  - Total Time: {duration(r.execution_time)} ({r.jobs_completed} jobs completed)",
                      f"  - Jobs/Second: {r.throughput:.1f}"]
            if r.processing_times:
                lines.append(f"  - 95th Percentile: {duration(r.p95)} processing (receive to done); "
                             f"{duration(r.latency_p95)} latency (enqueue to done)")
            else:
                lines.append("  - 95th Percentile: " + not_measured("no job completed"))
            lines.append("  ")
    lines[-1] = "```"  # the fence replaces the last scenario's spacer line
    lines.append("")
    return lines


def scalability_analysis(figures: ReportFigures) -> list[str]:
    s = figures.scaling
    note = [s.note, ""] if s.note else []
    return ["#### Scalability Analysis", "```", "Performance Scaling:", *s.rows,
            "", f"Linear scaling achieved: {s.verdict_text}", f"Rule: {s.rule}", "```", "", *note, "---", ""]
