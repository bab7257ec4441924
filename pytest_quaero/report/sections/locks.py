"""Write Lock Hold and Wait and Database Work per Job (under Database Lock Resilience), Detection Checks
(under Observations).

None is in the team's template; they sit where the template talks about the same
thing: the write lock and the work behind it next to the lock error analysis and the
retries, the per-message checks next to the behaviour the run confirmed. The figures and
their wording come from :mod:`pytest_quaero.report.locks` and
:mod:`pytest_quaero.report.counts`, shared with the HTML and terminal reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_quaero.report.counts import COUNTS_MEANING, count_table
from pytest_quaero.report.figures import ReportFigures, expected_jobs, section_names
from pytest_quaero.report.locks import (
    ConfigurationRow,
    LockTable,
    connection_configurations,
    detection_checks,
    lock_table,
)
from pytest_quaero.report.wording import FAIL_ICON, PASS_ICON, backend_of, cell, not_measured, not_run

__all__ = ["detection_section", "work_per_job_section", "write_lock_section"]

_NO_SCENARIO = "no scenario ran (--quaero-scenario)"


def _markdown_table(table: LockTable) -> list[str]:
    lines = ["| " + " | ".join(table.HEADERS) + " |",
             "|" + "|".join("---" for _ in table.HEADERS) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in table.cells(row)) + " |" for row in table.rows]
    return lines


def _each_run(figures: ReportFigures, render: Callable[[str, Any], list[str]]) -> list[str]:
    """``render(heading, run)`` for every run in template order; a scenario not run says so."""
    lines: list[str] = []
    for name in section_names(figures.groups):
        runs = figures.groups.get(name, [])
        if not runs:
            lines += [f"**{name.capitalize()} Load ({expected_jobs(name, runs)} jobs):** {not_run(name)}", ""]
        for run in runs:
            lines += render(f"**{run.label.capitalize()} Load ({run.result.total_jobs} jobs):**", run)
    return lines


def _lock_lines(heading: str, run: Any) -> list[str]:
    table = lock_table(run.result)
    if table.missing:
        return [f"{heading} {table.missing}", ""]
    return [f"{heading} {table.connections} connections observed", "", *_markdown_table(table), "",
            *_configuration_lines(connection_configurations(run.result), backend_of(run.result))]


def _configuration_lines(rows: list[ConfigurationRow], backend: str) -> list[str]:
    """The distinct connection configurations of a run, under its lock table (nothing if none recorded)."""
    if not rows:
        return []
    kinds = "one configuration" if len(rows) == 1 else f"{len(rows)} distinct configurations"
    lines = [f"Connections by configuration ({kinds}, read back from each connection):", ""]
    lines += [f"- {row.text(backend)}: {row.connections} connections, opened by {row.opened_by}" for row in rows]
    return [*lines, ""]


def _count_lines(heading: str, run: Any) -> list[str]:
    table = count_table(run.result)
    if table.missing:
        return [f"{heading} {table.missing}", ""]
    lines = [heading, "", "| " + " | ".join(table.HEADERS) + " |", "|" + "|".join("---" for _ in table.HEADERS) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in table.cells(row)) + " |" for row in table.rows]
    return [*lines, "", *_notes(table)]


def _notes(table: Any) -> list[str]:
    """What is not gated, and what the server counted, each its own paragraph."""
    return [line for part in (table.not_gated, table.server) if part for line in (part, "")]


def _detection_lines(heading: str, run: Any) -> list[str]:
    lines = [heading]
    for check in detection_checks(run.result):
        icon = "" if check.found is None else (FAIL_ICON if check.found else PASS_ICON) + " "
        lines.append(f"- {icon}**{check.name}:** {check.text}")
    return [*lines, ""]


def write_lock_section(figures: ReportFigures) -> list[str]:
    """Each run's write-lock table: per operation, hold and writer wait p50/p95/max, statements, lock errors."""
    words = figures.words
    lines = ["#### Write Lock Hold and Wait", "", words.hold_wait, "", words.configurations, ""]
    if not figures.results:
        return [*lines, not_measured(_NO_SCENARIO), ""]
    return lines + _each_run(figures, _lock_lines)


def work_per_job_section(figures: ReportFigures) -> list[str]:
    """Each run's counted database work per job, by operation, and the timing-dependent statements left out."""
    lines = ["#### Database Work per Job", "", COUNTS_MEANING, ""]
    if not figures.results:
        return [*lines, not_measured(_NO_SCENARIO), ""]
    return lines + _each_run(figures, _count_lines)


def detection_section(figures: ReportFigures) -> list[str]:
    """What the per-message checks found in each run; "none" where they found nothing."""
    lines = ["### Detection Checks", "",
             "Checked on every message and job while the run went on: each ack against the message it was given, "
             "receives that came back empty while a message stayed visible, sends made before their job row, "
             "status writes that changed no row, and jobs acked but never finished.", ""]
    if not figures.results:
        return [*lines, not_measured(_NO_SCENARIO), "", "---", ""]
    return [*lines, *_each_run(figures, _detection_lines), "---", ""]
