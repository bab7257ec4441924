"""Detailed Metrics, first half: Database Lock Resilience, Queue Message Lifecycle, Job Hierarchy Integrity.

Besides the runs' own figures, the lock-resilience section reads ``--quaero-compare-fixes``
(``fix_comparison`` in ``RunResult.extra``, see :mod:`pytest_quaero.report.figures`).
"""

from __future__ import annotations

from typing import Any

from pytest_quaero.report.figures import (
    ReportFigures,
    Run,
    before_fixes,
    comparison_error,
    expected_jobs,
    find_query,
    fix_comparison,
    queue_peak,
    section_names,
)
from pytest_quaero.report.wording import (
    FAIL_ICON,
    PASS_ICON,
    duration,
    mark,
    names,
    not_measured,
    not_run,
    pct,
    words_of,
)

__all__ = [
    "busy_error_analysis",
    "consistency_checks",
    "message_statistics",
    "queue_under_load",
    "relationship_validation",
    "retry_attempts",
    "retry_success_rate",
]

_NO_SCENARIO = "no scenario ran (--quaero-scenario)"


# ---------------------------------------------------------------- Database Lock Resilience


def busy_error_analysis(figures: ReportFigures) -> list[str]:
    """Before and after the lock fixes, and each fix alone turned off (``--quaero-compare-fixes``)."""
    t, runs = figures.totals, figures.runs
    lines = ["## Detailed Metrics", "", "### Database Lock Resilience", "", f"#### {figures.words.analysis}", "```"]
    befores = [(run, b) for run in runs if (b := before_fixes(run.result)) is not None]
    per_run = ", ".join(f"{run.label}: {run.result.busy_errors}" for run in runs)
    after = f"{t.busy} errors detected" + (f" ({per_run})" if len(runs) > 1 else "") if figures.results \
        else not_measured(_NO_SCENARIO)
    if befores:
        before_total = sum(int(b["busy_errors"]) for _, b in befores)
        after_same = sum(run.result.busy_errors for run, _ in befores)
        lines.append(f"Before Fixes: {before_total} errors detected ("
                     + ", ".join(f"{run.label}: {b['busy_errors']}" for run, b in befores) + ")")
        lines.append(f"After Fixes:  {after}")
        if before_total:
            improvement = 100.0 * (before_total - after_same) / before_total
            lines.append(f"Improvement:  {improvement:.1f}% error {'elimination' if after_same == 0 else 'reduction'}"
                         f" ({before_total} -> {after_same})")
        else:
            lines.append("Improvement:  none to measure: the before-fixes run met no lock error either")
    else:
        errors = [f"{run.label}: {e}" for run in runs if (e := comparison_error(run.result))]
        why = (f"the before-fixes run failed ({'; '.join(errors)})" if errors
               else "needs the before-fixes run of --quaero-compare-fixes")
        lines += [f"Before Fixes: {not_measured(why)}", f"After Fixes:  {after}", f"Improvement:  {not_measured(why)}"]
    for run in runs:
        lines += _ablation(run)
    lines += ["```", ""]
    return lines


def _ablation(run: Run) -> list[str]:
    rows = (fix_comparison(run.result) or {}).get("ablation") or []
    if not isinstance(rows, list) or not rows:
        return []
    errors = words_of(run.result).errors
    lines = ["", f"Each fix alone turned off ({run.label}; {errors}, change against the run above):"]
    for row in rows:
        if not isinstance(row, dict):
            continue
        fix = row.get("title") or row.get("fix", "?")
        if row.get("error"):
            lines.append(f"  - without {fix}: {not_measured('that run failed: ' + str(row['error']))}")
            continue
        lines.append(f"  - without {fix}: {row.get('busy_errors')} {errors} "
                     f"({int(row.get('delta_busy_errors', 0)):+d}), {row.get('retries')} retries, "
                     f"{float(row.get('throughput', 0.0)):.1f} jobs/s")
    return lines


def retry_success_rate(figures: ReportFigures) -> list[str]:
    t = figures.totals
    lines = ["#### Retry Success Rate"]
    met = t.successful_retries + t.exhausted
    if not figures.results:
        why = not_measured(_NO_SCENARIO)
        for label in ("Total Retry Operations", "Successful Retries", "Failed Retries", "Success Rate"):
            lines.append(f"- **{label}:** {why}")
    else:
        lines.append(f"- **Total Retry Operations:** {met} (operations that met a lock error, of {t.operations} "
                     f"database operations; {t.retries} retry attempts in all)")
        lines.append(f"- **Successful Retries:** {t.successful_retries}")
        lines.append(f"- **Failed Retries:** {t.exhausted} (gave up after {figures.settings.retry_attempts} "
                     "attempts)")
        if met:
            lines.append(f"- **Success Rate:** {100.0 * t.successful_retries / met:.1f}%")
        else:
            lines.append("- **Success Rate:** " + not_measured(
                f"no operation met a lock error ({t.busy} {figures.words.events}), so no retry happened; more "
                "contention (for example --quaero-workers=8 or --quaero-compare-fixes) exercises the retries"))
    lines.append("")
    return lines


def retry_attempts(figures: ReportFigures) -> list[str]:
    lines = ["#### Average Retry Attempts per Operation"]
    for label, ops in (("SaveJob Operations", ("save_job",)), ("Queue Delete Operations", ("queue_delete",)),
                       ("Overall Average", None)):
        operations, attempts = figures.retry_attempts(ops)
        if not operations:
            name = "any operation" if ops is None else ", ".join(ops)
            text = not_measured(f"no {name} ran in this session (--quaero-scenario)")
        else:
            text = f"{attempts / operations:.3f} attempts ({attempts} attempts for {operations} operations)"
        lines.append(f"- **{label}:** {text}")
    lines.append("")
    return lines


# ---------------------------------------------------------------- Queue Message Lifecycle


def message_statistics(figures: ReportFigures) -> list[str]:
    t = figures.totals
    lines = ["### Queue Message Lifecycle", "", "#### Message Processing Statistics"]
    if not figures.results:
        why = not_measured(_NO_SCENARIO)
        for label in ("Total Messages Enqueued", "Total Messages Deleted", "Deletion Failure Count",
                      "Average Message Processing Time", "Peak Queue Length"):
            lines.append(f"- **{label}:** {why}")
    else:
        delete_failures = sum(int(r.retry.get("queue_delete", {}).get("exhausted", 0)) for r in figures.results)
        lines.append(f"- **Total Messages Enqueued:** {t.enqueued}")
        lines.append(f"- **Total Messages Deleted:** {t.deleted}")
        lines.append(f"- **Deletion Failure Count:** {t.left} ({delete_failures} delete calls gave up after retries; "
                     f"{t.left} messages left in the queue, {t.dead} of them dead after max_receive)")
        if t.processing_times:
            lines.append(f"- **Average Message Processing Time:** "
                         f"{duration(sum(t.processing_times) / len(t.processing_times))} (receive to done, "
                         f"{len(t.processing_times)} jobs)")
        else:
            lines.append("- **Average Message Processing Time:** " + not_measured("no job completed"))
        missed = f"; not measured in {names(t.unsampled)}: shorter than the sampling interval" if t.unsampled else ""
        lines.append(f"- **Peak Queue Length:** {t.peak} (highest of {t.samples} queue samples{missed})")
    lines.append("")
    return lines


def queue_under_load(figures: ReportFigures) -> list[str]:
    lines = ["#### Queue Performance Under Load", "```"]
    for name in section_names(figures.groups):
        runs = figures.groups.get(name, [])
        if not runs:
            lines += [f"{name.capitalize()} Load ({expected_jobs(name, runs)} jobs):",
                      f"  - Peak Queue Length: {not_run(name)}", f"  - Average Processing Time: {not_run(name)}", "  "]
            continue
        for run in runs:
            r = run.result
            avg = duration(r.avg_processing_time) if r.processing_times else not_measured("no job completed")
            peak = queue_peak(r)
            shown = str(peak) if peak is not None else not_measured(
                "the run was shorter than the sampling interval (see Queue Statistics During Test)")
            lines += [f"{run.label.capitalize()} Load ({r.total_jobs} jobs):",
                      f"  - Peak Queue Length: {shown}", f"  - Average Processing Time: {avg}", "  "]
    lines[-1] = "```"  # the fence replaces the last scenario's spacer line
    lines.append("")
    return lines


# ---------------------------------------------------------------- Job Hierarchy Integrity


def relationship_validation(figures: ReportFigures) -> list[str]:
    t = figures.totals
    lines = ["### Job Hierarchy Integrity", "", "#### Parent-Child Relationship Validation"]
    if not figures.results:
        why = not_measured(_NO_SCENARIO)
        for label in ("Total Parent Jobs Created", "Total Child Jobs Created", "Orphaned Jobs Count",
                      "Missing Children Count", "Hierarchy Integrity"):
            lines.append(f"- **{label}:** {why}")
    else:
        lines.append(f"- **Total Parent Jobs Created:** {t.parents_found} (of {t.parents_expected} planned)")
        lines.append(f"- **Total Child Jobs Created:** {t.children_found} (of {t.children_expected} planned)")
        lines.append(f"- **Orphaned Jobs Count:** {t.orphans}")
        lines.append(f"- **Missing Children Count:** {t.missing_children}")
        per_run = ", ".join(f"{run.label} {pct(run.result.hierarchy_integrity)}" for run in figures.runs)
        lines.append(f"- **Hierarchy Integrity:** {pct(t.min_integrity)}"
                     + (f" (lowest of {per_run})" if len(figures.runs) > 1 else ""))
    lines.append("")
    return lines


def consistency_checks(figures: ReportFigures) -> list[str]:
    """The integrity queries' SQL (from the first run) and each run's result."""
    lines = ["#### Database Consistency Checks", "```sql"]
    if not figures.results:
        lines.append("-- " + not_measured("no scenario ran, so no query was run (--quaero-scenario)"))
    first = True
    for check in ("Verify no orphaned children", "Verify no missing expected children"):
        query = find_query(figures.results[0], check) if figures.results else None
        if query is None:
            continue
        if not first:
            lines.append("")
        first = False
        lines += [f"-- {check}", *query["sql"].rstrip(";").splitlines()]
        lines[-1] += ";"
        lines.append("")
        for run in figures.runs:
            q = find_query(run.result, check)
            if q is None:
                lines.append(f"-- Result ({run.label}): " + not_measured("this run recorded no such query"))
            elif check.startswith("Verify no orphaned"):
                orphans = int(q["rows"][0][0]) if q["rows"] else 0
                lines.append(f"-- Result ({run.label}, run {run.result.run_id}): {orphans} orphaned children "
                             f"{mark(orphans == 0)}")
            else:
                lines += _child_count_result(run, q)
    lines += ["```", ""]
    return lines


def _child_count_result(run: Run, query: dict[str, Any]) -> list[str]:
    r = run.result
    rows = query["rows"]
    expected = r.children_per_parent
    wrong = [row for row in rows if int(row[1]) != expected]
    missing = r.parents - len(rows)
    ok = not wrong and missing == 0
    counts = sorted({int(row[1]) for row in rows})
    text = (f"-- Result ({run.label}, run {r.run_id}): {len(rows)} parents with children, child_count "
            f"{'/'.join(map(str, counts)) or 'none'} (expected {expected} each)")
    lines = [text + f" {mark(ok)}"]
    if ok:
        lines.append(f"-- All {r.parents} parent jobs have the expected {expected} children {PASS_ICON}")
    else:
        for row in wrong[:10]:
            lines.append(f"--   {row[0]}: {row[1]} children, expected {expected} {FAIL_ICON}")
        if missing > 0:
            lines.append(f"--   {missing} parents have no child rows at all {FAIL_ICON}")
    return lines
