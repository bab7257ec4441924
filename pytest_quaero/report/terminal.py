"""The terminal summary: each scenario's criteria table, where a failed run's files are, and the gate's lines.

Imported only when a session has results to show, so the core modules it reads are
imported at the top.
"""

from __future__ import annotations

from typing import Any

from pytest_quaero.core.baseline import format_table
from pytest_quaero.core.fixes import comparison_lines
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.table import aligned
from pytest_quaero.report.counts import count_table, per_job
from pytest_quaero.report.exploration import exploration_text
from pytest_quaero.report.locks import detection_summary
from pytest_quaero.report.wording import describe_pool, plural, words_of

__all__ = [
    "counts_line",
    "criteria_table",
    "detection_line",
    "gate_summary_lines",
    "lock_line",
    "pool_text",
    "scenario_heading",
    "write_summary",
]

_HEADERS = ("criterion", "measured", "required", "status")


def criteria_table(result: RunResult) -> list[str]:
    """Aligned rows: criterion, measured, required, status."""
    rows = [(v["title"], v["measured"], v["required"], "PASS" if v["passed"] else "FAIL") for v in result.verdicts]
    return aligned([_HEADERS, *rows], indent="  ")


def pool_text(result: RunResult) -> str:
    """``2 thread workers``, or the external pool that ran (``external worker pool (go1.26.8; 2 external workers)``)."""
    pool = describe_pool(result.extra)
    if pool is not None:
        return pool.split(": ", 1)[0]  # the command is in the JSON; the line stays short
    s = result.settings
    return f"{s.get('workers')} {s.get('worker_mode')} workers"


def scenario_heading(result: RunResult) -> str:
    """One line per scenario: size, workers, verdict and the headline figures."""
    status = "PASS" if result.passed else "FAIL"
    line = (
        f"quaero[{result.scenario}] {result.parents} x {result.children_per_parent} = {result.total_jobs} jobs, "
        f"{pool_text(result)}: {status} "
        f"({result.jobs_completed}/{result.total_jobs} jobs in {result.execution_time:.2f}s, "
        f"{result.throughput:.1f} jobs/s, {result.busy_errors} {words_of(result).errors})"
    )
    explored = exploration_text(result)
    if explored:  # N explored schedules stand behind this verdict, or one replayed
        line += f" [{explored}]"
    origin = result.extra.get("origin")
    if origin:  # a quaero_run() result goes back to its test, which decides with its own asserts
        line += f" [returned to {origin}: fails it only through the test's asserts]"
    return line


def write_summary(terminalreporter: Any, results: list[RunResult]) -> None:
    """The ``quaero load test results`` block of pytest's terminal summary.

    Under ``-q`` a passing scenario is its one heading line; a failing one still shows its
    table. FAIL rows are red wherever a table is shown.
    """
    terminalreporter.write_sep("=", "quaero load test results")
    quiet = int(getattr(terminalreporter, "verbosity", 0)) < 0
    for result in results:
        terminalreporter.write_line(scenario_heading(result), bold=True, red=not result.passed, green=result.passed)
        if quiet and result.passed:
            continue
        table = criteria_table(result)
        terminalreporter.write_line(table[0])
        for line, verdict in zip(table[1:], result.verdicts, strict=True):
            if verdict["passed"]:
                terminalreporter.write_line(line)
            else:
                terminalreporter.write_line(line, red=True, bold=True)
        if quiet:
            _kept_lines(terminalreporter, result)
            continue
        locks = lock_line(result)
        if locks:
            terminalreporter.write_line(locks)
        counts = counts_line(result)
        if counts:
            terminalreporter.write_line(counts)
        detected = detection_line(result)
        if detected:
            terminalreporter.write_line(detected, red=True)
        _kept_lines(terminalreporter, result)


def _kept_lines(terminalreporter: Any, result: RunResult) -> None:
    if not result.extra.get("kept"):
        return
    if result.settings.get("backend") == "postgresql":  # the run's schema is dropped with the run
        terminalreporter.write_line(f"  log kept:      {result.log_path} (the run's PostgreSQL schema was dropped)")
        return
    terminalreporter.write_line(f"  database kept: {result.db_path}")
    terminalreporter.write_line(f"  log kept:      {result.log_path}")
    terminalreporter.write_line(f"  inspect with:  sqlite3 {result.db_path}")


def lock_line(result: RunResult) -> str:
    """What the run's connections did with the database's locks (SQLite's write lock, PostgreSQL's row locks),
    measured on every connection."""
    locks = result.extra.get("locks")
    if not locks:
        return ""
    lock = words_of(result).lock
    try:
        total = locks["total"]
        hold, wait = total["hold_ms"], total["wait_ms"]
        return (f"  {lock}: held p50 {hold['p50']:.2f}ms, p95 {hold['p95']:.2f}ms, max {hold['max']:.2f}ms over "
                f"{total['write_transactions']} transactions; writers waited p95 {wait['p95']:.2f}ms, max "
                f"{wait['max']:.2f}ms; {locks['connections']} connections, "
                f"{sum(total['statements'].values())} statements")
    except (AttributeError, KeyError, TypeError, ValueError):
        # a reshaped entry (a result from another version) costs the line, never the summary
        return f"  {lock}: not measured: the lock measurements in this result have an unexpected shape"


def counts_line(result: RunResult) -> str:
    """The run's counted database work per job, in total, and what was left ungated; empty without counts."""
    if result.extra.get("counts") is None:
        return ""
    table = count_table(result)
    total = table.total
    if total is None:
        return f"  counts per job: {table.missing}"
    kinds = total.kinds_text
    return (f"  counts per job: {per_job(total.statements)} statements" + (f" ({kinds})" if kinds else "")
            + f", {per_job(total.write_transactions)} write transactions, {per_job(total.rows_changed)} rows changed; "
            f"{plural(total.connections, 'connection')}" + (f"; {table.not_gated}" if table.not_gated else "")
            + (f"; {table.server}" if table.server else ""))


def detection_line(result: RunResult) -> str:
    """What the detection checks found (wrong acks, stalls, lost jobs ...); empty when they found nothing."""
    found = detection_summary(result)
    return f"  detection: {found}" if found else ""


def gate_summary_lines(result: RunResult) -> list[str]:
    """Terminal lines for one result's gate measurements: disabled fixes, before/after, contention, faults, baseline.

    Reads ``result.extra`` as the gate wrote it (``disabled_fixes``, ``fix_comparison``,
    ``contention``, ``faults``, ``baseline``); an absent key adds no line.
    """
    name = f"quaero[{result.scenario}]"
    lines: list[str] = []
    if result.extra.get("disabled_fixes"):
        lines.append(f"{name} ran with fixes disabled: {', '.join(result.extra['disabled_fixes'])}")
    if result.extra.get("fix_comparison"):
        lines.append(f"{name} before/after the lock fixes:")
        lines.extend(comparison_lines(result))
    contention = result.extra.get("contention")
    if contention:
        lines += _contention_lines(name, contention, words_of(result).errors)
    faults = result.extra.get("faults")
    if faults:
        lines.append(f"{name} faults {faults['spec']}:")
        for entry in faults.get("injected", []):
            what = {k: v for k, v in entry.items() if k not in ("fault", "spec", "at")}
            lines.append(f"  t+{entry.get('at', 0):.2f}s {entry['fault']}: "
                         + ", ".join(f"{k}={v}" for k, v in what.items()))
        for entry in faults.get("missed", []):
            lines.append(f"  NOT INJECTED {entry['spec']}: {entry['reason']}")
    baseline = result.extra.get("baseline")
    if baseline and baseline.get("rows"):
        lines.append(f"{name} against baseline {baseline.get('path')} "
                     f"({baseline['key']} on {baseline['fingerprint']}):")
        lines.extend("  " + line for line in format_table(baseline["rows"]))
    elif baseline and baseline.get("saved"):
        lines.append(f"{name} saved as baseline {baseline['key']} on {baseline['fingerprint']} in "
                     f"{baseline.get('saved_to')}")
    return lines


def _contention_lines(name: str, contention: dict[str, Any], errors: str) -> list[str]:
    under = contention.get("checkpoint_under_load", {})
    after = contention.get("checkpoint_after", {})
    if under.get("log_frames") == -1:  # SQLite's answer when the database is not in WAL mode
        wal = "no WAL (rollback journal)"
    else:
        wal = (f"WAL max {contention.get('wal_max_bytes', 0) / 1024:.0f} KiB, checkpoint(TRUNCATE) under load "
               f"busy={under.get('busy', '?')} ({under.get('log_frames', '?')} frames), "
               f"after busy={after.get('busy', '?')}, final WAL {contention.get('wal_final_bytes', 0)} bytes")
    lines = [f"{name} contention {contention['spec']}: {wal}"]
    for error in contention.get("errors", []):
        lines.append(f"  contention error: {error}")
    for load in contention.get("loads", []):
        lines.append(f"  {load.get('text', load.get('kind'))}: {load.get('iterations', 0)} rounds, "
                     f"{load.get('busy_errors', 0)} {errors} of its own"
                     + (f", errors: {'; '.join(load['errors'])}" if load.get("errors") else ""))
    return lines
