"""Observations and Remaining Issues: what the numbers confirm, and what they flag.

Besides the runs' own figures, Edge Cases Handled reads ``faults`` (``--quaero-faults``:
``injected`` and ``missed`` entries) and ``contention`` (``--quaero-contention``:
``loads``, ``wal_max_bytes``) from ``RunResult.extra``, defensively. The priority issues
include what the detection checks found (:mod:`pytest_quaero.report.locks`).
"""

from __future__ import annotations

from pytest_quaero.core.settings import format_duration
from pytest_quaero.report.figures import ReportFigures, Run, find_verdict
from pytest_quaero.report.locks import STALLS, detection_checks
from pytest_quaero.report.wording import (
    FAIL_ICON,
    NONE_ICON,
    duration,
    mark,
    names,
    not_measured,
    pct,
    words_of,
    worker_name,
)

__all__ = [
    "UTILIZATION_TARGET",
    "critical_issues",
    "edge_cases",
    "expected_behavior",
    "performance_characteristics",
    "priority_issues",
]

#: the template's utilization target ("Ensure both workers maintain >80% utilization")
UTILIZATION_TARGET = 80.0
_NO_SCENARIO = "no scenario ran (--quaero-scenario)"


# ---------------------------------------------------------------- Observations


def expected_behavior(figures: ReportFigures) -> list[str]:
    t = figures.totals
    lines = ["## Observations", "", "### Expected Behavior Confirmed"]
    if not figures.results:
        why = not_measured(_NO_SCENARIO)
        for label in ("Worker Staggering", "Retry Logic", "Queue Message Processing", "Job Hierarchy Preservation",
                      "Progress Tracking"):
            lines.append(f"- {NONE_ICON} **{label}:** {why}")
        lines.append("")
        return lines
    stagger = [(run, find_verdict(run.result, "worker_staggering")) for run in figures.runs]
    ok = all(v is not None and v["passed"] for _, v in stagger)
    lines.append(f"- {mark(ok)} **Worker Staggering:** measured " + "; ".join(
        f"{run.label} {v['measured']} (required {v['required']})" if v else f"{run.label} no verdict"
        for run, v in stagger) + f"; {t.busy} lock errors in the whole session")
    if t.busy == 0:
        lines.append(f"- {NONE_ICON} **Retry Logic:** " + not_measured(
            "no lock error occurred, so the exponential backoff was never exercised (more contention, "
            "e.g. --quaero-workers=8 or --quaero-compare-fixes, exercises it)"))
    else:
        lines.append(f"- {mark(t.exhausted == 0)} **Retry Logic:** {t.busy} lock errors met; "
                     f"{t.successful_retries} operations succeeded after retry, {t.exhausted} gave up")
    lines.append(f"- {mark(t.deleted == t.enqueued and t.left == 0)} **Queue Message Processing:** "
                 f"{t.deleted}/{t.enqueued} messages processed and deleted, {t.left} left")
    lines.append(f"- {mark(t.min_integrity >= 100.0)} **Job Hierarchy Preservation:** {t.orphans} orphans, "
                 f"{t.missing_children} missing children, integrity {pct(t.min_integrity)} at worst "
                 f"({_at_once(figures)})")
    lines.append(f"- {mark(t.progress_mismatches == 0)} **Progress Tracking:** parent progress counters matched "
                 f"their children's statuses for {t.parents_found - t.progress_mismatches} of {t.parents_found} "
                 "parents")
    lines.append("")
    return lines


def _at_once(figures: ReportFigures) -> str:
    """How many producers and workers really ran at once: runs overlap only when xdist spreads them."""
    t, runs = figures.totals, len(figures.results)
    overlap = "one run at a time" if t.max_producers <= max((r.parents for r in figures.results), default=0) \
        else "runs overlapped in time"
    if runs == 1:
        return f"{t.max_workers} workers and {t.max_producers} producers at once"
    return (f"{runs} runs, {overlap}: at most {t.max_workers} workers and {t.max_producers} producers at once")


def performance_characteristics(figures: ReportFigures) -> list[str]:
    t = figures.totals
    lines = ["### Performance Characteristics", f"- **Linear Scaling:** {figures.scaling.characteristic}"]
    if figures.results:
        share = 100.0 * t.busy / t.operations if t.operations else 0.0
        lines.append(f"- **Low Contention:** {t.busy} lock errors in {t.operations} database operations "
                     f"({share:.2f}%), {t.busy_wait:.3f}s spent waiting on locks")
        if t.busy == 0:
            handling = "no retry was needed (no lock error occurred)"
        elif t.exhausted == 0:
            handling = f"All retry operations successful ({t.successful_retries} operations retried)"
        else:
            handling = f"{FAIL_ICON} {t.exhausted} operations gave up after every retry"
        lines.append(f"- **Robust Error Handling:** {handling}")
        rates = ", ".join(f"{run.label} {pct(run.result.completion_rate)}" for run in figures.runs)
        consistent = all(run.result.completion_rate >= 100.0 for run in figures.runs)
        lines.append("- **Consistent Results:** "
                     + ("100% job completion across all test scenarios run" if consistent else "completion varied")
                     + f" ({rates})")
    else:
        why = not_measured(_NO_SCENARIO)
        lines += [f"- **{label}:** {why}"
                  for label in ("Low Contention", "Robust Error Handling", "Consistent Results")]
    lines.append("")
    return lines


def edge_cases(figures: ReportFigures) -> list[str]:
    t, results = figures.totals, figures.results
    lines = ["### Edge Cases Handled"]
    if results:
        producer_errors = sum(len(r.producer_errors) for r in results)
        lines.append(f"- **Concurrent Job Creation:** {t.parents_expected} parents, each created by a producer "
                     f"of its own ({_at_once(figures)}); {producer_errors} producer errors, {t.parents_found} parents "
                     f"and {t.children_found} children found afterwards")
        receives = sum(int(r.retry.get("queue_receive", {}).get("operations", 0)) for r in results)
        deletes = sum(int(r.retry.get("queue_delete", {}).get("operations", 0)) for r in results)
        duplicates = sum(r.duplicate_completions for r in results)
        lines.append(f"- **Rapid Queue Operations:** {t.enqueued} sends, {receives} receives and {deletes} deletes; "
                     f"{duplicates} jobs processed twice, {sum(r.redeliveries for r in results)} redeliveries")
    else:
        lines.append("- **Concurrent Job Creation:** " + not_measured(_NO_SCENARIO))
        lines.append("- **Rapid Queue Operations:** " + not_measured(_NO_SCENARIO))
    for run in figures.runs:
        lines += _injected(run)
    lines.append("- **Database Connection Pooling:** " + not_measured(
        "every worker and producer opens its own connection; pool efficiency is not instrumented by any option"))
    lines.append("- **Memory Usage:** " + not_measured("pytest-quaero does not sample memory; no option measures it"))
    lines.append("")  # Detection Checks (sections.locks) follows and closes Observations
    return lines


def _injected(run: Run) -> list[str]:
    """The faults and outside contention ``--quaero-faults`` / ``--quaero-contention`` added to a run."""
    lines: list[str] = []
    faults = run.result.extra.get("faults")
    if isinstance(faults, dict):
        injected = [f for f in faults.get("injected") or [] if isinstance(f, dict)]
        kinds = ", ".join(f"{f.get('fault')} at t+{float(f.get('at') or 0):.2f}s" for f in injected) or "none"
        lines.append(f"- **Injected Faults ({run.label}):** {len(injected)} injected ({kinds}); "
                     f"{len(faults.get('missed') or [])} never fired")
    contention = run.result.extra.get("contention")
    if isinstance(contention, dict):
        errors = words_of(run.result).errors
        loads = [load for load in contention.get("loads") or [] if isinstance(load, dict)]
        lines.append(f"- **Outside Contention ({run.label}):** "
                     + (", ".join(f"{load.get('kind')} ({load.get('busy_errors', 0)} {errors} of its own)"
                                  for load in loads) or "no load")
                     + (f"; WAL peaked at {contention['wal_max_bytes']} bytes"
                        if isinstance(contention.get("wal_max_bytes"), int) else ""))
    return lines


# ---------------------------------------------------------------- Remaining Issues


def critical_issues(figures: ReportFigures) -> list[str]:
    """Every failed criterion, with its detail."""
    lines = ["## Remaining Issues (if any)", "", "### Critical Issues"]
    if not figures.results:
        lines.append(not_measured(_NO_SCENARIO))
    elif figures.failed or figures.claims:
        for r, v in figures.failed:
            lines.append(f"- **{figures.label(r)} \N{EM DASH} {v['title']}:** measured {v['measured']}, required "
                         f"{v['required']}" + (f" ({v['detail']})" if v.get("detail") else ""))
        for claim in figures.claims:
            title, _, text = claim.partition(": ")
            lines.append(f"- **Template claim not met \N{EM DASH} {title}:** {text}")
    else:
        lines.append(f"None identified: all {figures.criteria_count} criteria passed.")
    lines.append("")
    return lines


def priority_issues(figures: ReportFigures) -> list[str]:
    """High, Medium and Low Priority Issues: what the runs flag beyond the criteria."""
    high: list[str] = []
    medium: list[str] = []
    low: list[str] = []
    for run in figures.runs:
        r, label = run.result, run.label
        totals = r.retry_totals
        if totals.exhausted:
            high.append(f"{label}: {totals.exhausted} lock errors escaped every retry")
        if totals.fast_busy:
            words = words_of(r)
            high.append(f"{label}: {totals.fast_busy} lock errors came back well before {words.timeout} {words.fast}")
        if r.job_errors:
            high.append(f"{label}: {r.job_errors} jobs hit a database error and were left for redelivery")
        for error in (r.producer_errors + r.worker_errors)[:5]:
            high.append(f"{label}: {error}")
        if r.timed_out:
            high.append(f"{label}: the queue did not drain before the {format_duration(r.time_limit)} deadline")
        if totals.busy_events and not totals.exhausted:
            medium.append(f"{label}: {totals.busy_events} lock errors were absorbed by retries "
                          f"({totals.busy_wait_seconds:.3f}s waiting)")
        if r.redeliveries:
            medium.append(f"{label}: {r.redeliveries} messages were delivered more than once")
        if r.dead_messages:
            medium.append(f"{label}: {r.dead_messages} messages died after max_receive")
        for check in detection_checks(r):
            if check.found:
                # a stall costs time; every other finding is a message or job handled wrongly
                (medium if check.name == STALLS else high).append(f"{label}: {check.name}: {check.brief}")
        low_workers = [w for w in r.workers if w.start_offset is not None and w.utilization < UTILIZATION_TARGET]
        unstarted = [worker_name(w) for w in r.workers if w.start_offset is None]
        if unstarted:
            low.append(f"{label}: {names(unstarted)} never started before the run ended "
                       f"({duration(r.execution_time)})")
        if low_workers:
            low.append(f"{label}: worker utilization below the template's {UTILIZATION_TARGET:.0f}% target ("
                       + ", ".join(f"{worker_name(w)} {pct(w.utilization)}" for w in low_workers) + ")")
    checks = {
        "High Priority Issues": (high, "escaped lock errors, fast lock errors, job/producer/worker errors, timeouts, "
                                       "wrong acks, sends before their row, silent writes, lost and unfinished jobs"),
        "Medium Priority Issues": (medium, "lock errors absorbed by retries, redeliveries, dead messages, "
                                           "stalled receives"),
        "Low Priority Issues": (low, f"worker utilization below {UTILIZATION_TARGET:.0f}%"),
    }
    lines: list[str] = []
    for heading, (found, checked) in checks.items():
        lines.append(f"### {heading}")
        if not figures.results:
            lines.append(not_measured(_NO_SCENARIO))
        elif found:
            lines += [f"- {item}" for item in found]
        else:
            lines.append(f"None identified (checked: {checked}).")
        lines.append("")
    lines += ["---", ""]
    return lines
