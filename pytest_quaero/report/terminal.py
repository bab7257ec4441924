"""The terminal summary: each scenario's criteria table, and where a failed run's files are."""

from __future__ import annotations

from typing import Any

from pytest_quaero.core.metrics import RunResult

__all__ = ["criteria_table", "write_summary"]

_HEADERS = ("criterion", "measured", "required", "status")


def criteria_table(result: RunResult) -> list[str]:
    """Aligned rows: criterion, measured, required, status."""
    rows = [(v["title"], v["measured"], v["required"], "PASS" if v["passed"] else "FAIL") for v in result.verdicts]
    widths = [max(len(str(row[i])) for row in [_HEADERS, *rows]) for i in range(len(_HEADERS))]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(_HEADERS, widths)).rstrip()]
    lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return lines


def scenario_heading(result: RunResult) -> str:
    s = result.settings
    status = "PASS" if result.passed else "FAIL"
    return (
        f"quaero[{result.scenario}] {result.parents} x {result.children_per_parent} = {result.total_jobs} jobs, "
        f"{s.get('workers')} {s.get('worker_mode')} workers: {status} "
        f"({result.jobs_completed}/{result.total_jobs} jobs in {result.execution_time:.2f}s, "
        f"{result.throughput:.1f} jobs/s, {result.busy_errors} busy errors)"
    )


def write_summary(terminalreporter: Any, results: list[RunResult]) -> None:
    terminalreporter.write_sep("=", "quaero load test results")
    for result in results:
        terminalreporter.write_line(scenario_heading(result), bold=True, red=not result.passed, green=result.passed)
        for line in criteria_table(result):
            terminalreporter.write_line(line)
        if result.extra.get("kept"):
            terminalreporter.write_line(f"  database kept: {result.db_path}")
            terminalreporter.write_line(f"  log kept:      {result.log_path}")
            terminalreporter.write_line(f"  inspect with:  sqlite3 {result.db_path}")
