"""The team's load-test template, filled in from measurements: what ``--quaero-report=PATH.md`` writes.

The output keeps the template's title, sections, tables and order. Every bracketed
placeholder becomes a measured value or ``not measured: <why, and the option that
measures it>``; every claim the template makes ("Linear scaling", "All retry
operations successful", "APPROVED FOR PRODUCTION") appears only when this session's
numbers say so. Nothing here measures anything: it reads :class:`RunResult` objects
(the ones that travelled to this process on test reports) and a little context; the
figures it prints are computed in :mod:`pytest_quaero.report.figures`, and this module
writes them section by section.

Keys of ``RunResult.extra`` the report reads (written by other features, all optional, all
read defensively so a missing or reshaped entry degrades to "not measured"):

* ``fix_comparison`` (``--quaero-compare-fixes``, :mod:`pytest_quaero.core.fixes`):
  ``before.busy_errors`` (all fixes off) against the judged run, and ``ablation`` rows
  (``fix``, ``title``, ``busy_errors``, ``retries``, ``throughput``, ``delta_busy_errors``,
  or ``error``). ``compare_fixes`` with the same ``busy_errors`` is read as a fallback.
* ``disabled_fixes`` (``--quaero-disable``): fixes the session ran without.
* ``faults`` (``--quaero-faults``): ``injected`` and ``missed`` entries.
* ``contention`` (``--quaero-contention``): ``loads``, ``wal_max_bytes``, ``checkpoint_after``.
* ``origin``: the test that ran the scenario through the ``quaero_run`` fixture.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.report.figures import (
    FAIL_ICON,
    LINEAR_MIN_FACTOR,  # noqa: F401 (re-exported: a public name of this module)
    MAX_QUEUE_ROWS,  # noqa: F401 (re-exported: a public name of this module)
    NONE_ICON,
    PASS_ICON,
    TEMPLATE_SCENARIOS,
    _before_fixes,
    _cell,
    _child_count_result,
    _comparison,
    _comparison_error,
    _describe_failure,
    _differs,
    _duration,
    _expected_jobs,
    _failed,
    _group,
    _mark,
    _names,
    _not_run,
    _offset,
    _pct,
    _plural,
    _query,
    _query_result,
    _queue_over_time,
    _scaling,
    _section_names,
    _stagger_tolerance,
    _status,
    _title,
    _Totals,
    _utc,
    _verdict,
    _worker_name,
    not_measured,
)
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.settings import Settings, format_duration, to_toml

__all__ = ["ReportContext", "criteria_rows", "render", "step_summary"]

TEMPLATE_TITLE = "# Job Load Test Results"
#: the template's utilization target ("Ensure both workers maintain >80% utilization")
UTILIZATION_TARGET = 80.0

# The template's scenario table: row title -> criterion key (None: the jobs-created row)
_TABLE_ROWS: tuple[tuple[str, str | None], ...] = (
    ("Total Jobs Created", None),
    ("Execution Time", "execution_time"),
    ("SQLITE_BUSY Errors", "sqlite_busy_errors"),
    ("Queue Deletion Success Rate", "queue_deletion"),
    ("Hierarchy Integrity", "hierarchy_integrity"),
    ("Job Completion Rate", "completion_rate"),
    ("Worker Staggering", "worker_staggering"),
    ("Throughput", "throughput"),
)


@dataclass
class ReportContext:
    """What the report says besides the results: when, where, with which settings."""

    results: list[RunResult]
    settings: Settings
    created: float = field(default_factory=time.time)
    machine: dict[str, Any] = field(default_factory=dict)
    commit: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    #: wall time of the whole pytest session, seconds (None when unknown)
    session_duration: float | None = None
    #: where --quaero-json wrote this session's document, if it did
    json_path: str | None = None


# ---------------------------------------------------------------- criteria tables (also the step summary)


def criteria_rows(result: RunResult) -> list[tuple[str, str, str, str]]:
    """The template's table for one run: metric, measured result, criterion, status."""
    rows: list[tuple[str, str, str, str]] = []
    created = result.children_found
    rows.append(("Total Jobs Created", f"{created} ({result.parents} parents x {result.children_per_parent} children)",
                 f"{result.total_jobs} planned", _mark(created == result.total_jobs)))
    used = set()
    for title, key in _TABLE_ROWS[1:]:
        assert key is not None
        verdict = _verdict(result, key)
        used.add(key)
        if verdict is None:
            rows.append((title, not_measured(f"no {key} verdict in this run"), "-", NONE_ICON))
            continue
        measured = verdict["measured"] + (f" ({verdict['detail']})" if verdict.get("detail") else "")
        rows.append((title, measured, verdict["required"], _status(verdict["passed"])))
    for verdict in result.verdicts:  # criteria beyond the template's (duplicates, baselines, user criteria)
        if verdict.get("criterion") in used:
            continue
        measured = verdict["measured"] + (f" ({verdict['detail']})" if verdict.get("detail") else "")
        rows.append((verdict["title"], measured, verdict["required"], _status(verdict["passed"])))
    return rows


def _table(rows: Iterable[tuple[str, str, str, str]]) -> list[str]:
    lines = ["| Metric | Result | Pass/Fail Criteria | Status |", "|--------|--------|-------------------|--------|"]
    lines += [f"| **{_cell(a)}** | {_cell(b)} | {_cell(c)} | {_cell(d)} |" for a, b, c, d in rows]
    return lines


def step_summary(results: Sequence[RunResult]) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: a status line and each scenario's criteria table."""
    failed = _failed(results)
    verdicts = sum(len(r.verdicts) for r in results)
    lines = [f"## pytest-quaero load test: {'FAIL' if failed or not results else 'PASS'}", ""]
    lines.append(f"{verdicts - len(failed)} of {verdicts} criteria passed in {len(results)} scenario run(s).")
    for runs in _group(results).values():
        for run in runs:
            r = run.result
            lines += ["", f"### quaero[{run.label}] {r.parents} x {r.children_per_parent} = {r.total_jobs} jobs: "
                      f"{_status(r.passed)}", ""]
            lines += _table(criteria_rows(r))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the report


class _Report:
    def __init__(self, ctx: ReportContext) -> None:
        self.ctx = ctx
        self.results = list(ctx.results)
        self.groups = _group(self.results)
        self.runs = [run for runs in self.groups.values() for run in runs]
        self.failed = _failed(self.results)
        self.out: list[str] = []
        self.totals = _Totals.of(self.results)
        self.scaling = _scaling(self.groups)

    def add(self, *lines: str) -> None:
        self.out.extend(lines)

    @property
    def overall_passed(self) -> bool:
        return bool(self.results) and not self.failed

    # ------------------------------------------------------------ header

    def environment(self) -> str:
        m, v = self.ctx.machine, self.ctx.versions
        sqlite = self.results[0].sqlite_version if self.results else v.get("sqlite", m.get("sqlite_version", "?"))
        parts = [
            f"{m.get('system', '?')} {m.get('release', '')} {m.get('machine', '')}".strip(),
            f"{m.get('cpu_count', '?')} CPUs",
            f"host {m.get('node', '?')}",
            f"Python {v.get('python', m.get('python_version', '?'))}",
            f"SQLite {sqlite}",
            f"pytest-quaero {v.get('plugin', '?')}",
        ]
        commit = self.ctx.commit
        if commit.get("available"):
            parts.append(f"commit {commit.get('describe')}" + (f" on {commit['branch']}" if commit.get("branch") else ""))
        else:
            parts.append("commit " + not_measured(f"git describe failed: {commit.get('error', 'no git')}"))
        return ", ".join(parts)

    def executive_summary(self) -> None:
        self.add(TEMPLATE_TITLE, "", "## Executive Summary", "")
        self.add(f"**Test Date:** {_utc(self.ctx.created)}")
        self.add(f"**Environment:** Quaero Job Queue Database Lock Fixes Validation ({self.environment()})")
        verdicts = sum(len(r.verdicts) for r in self.results)
        if not self.results:
            status = not_measured("no scenario ran in this session (run with --quaero-scenario=light|medium|heavy|all)")
        else:
            status = (f"{'PASS' if self.overall_passed else 'FAIL'} ({verdicts - len(self.failed)} of "
                      f"{_plural(verdicts, 'criterion', 'criteria')} passed in "
                      f"{_plural(len(self.results), 'scenario run')})")
        self.add(f"**Overall Status:** {status}")
        self.add(f"**Key Findings:** {self.key_findings()}")
        self.add(f"**Recommendation:** {self.recommendation()}", "", "---", "")

    def key_findings(self) -> str:
        if not self.results:
            return not_measured("no scenario ran, so there is nothing to summarise; run with --quaero-scenario=all")
        runs = "; ".join(
            f"{run.label} completed {run.result.jobs_completed}/{run.result.total_jobs} jobs in "
            f"{_duration(run.result.execution_time)} ({run.result.throughput:.1f} jobs/s)"
            for run in self.runs
        )
        t = self.totals
        first = f"Ran {_plural(len(self.runs), 'scenario run')}: {runs}."
        second = (
            f"SQLite raised {_plural(t.busy, 'lock error')} (SQLITE_BUSY/LOCKED) in {t.operations} database operations, "
            f"{_plural(t.successful_retries, 'operation')} recovered by retrying and {t.exhausted} gave up; "
            f"{t.deleted}/{t.enqueued} queue "
            f"messages were deleted and hierarchy integrity was {_pct(t.min_integrity)} at worst."
        )
        if self.failed:
            third = (f"{_plural(len(self.failed), 'criterion', 'criteria')} failed: "
                     + "; ".join(_describe_failure(v, self._label(r)) for r, v in self.failed) + ".")
        else:
            third = f"All {sum(len(r.verdicts) for r in self.results)} criteria passed."
        return " ".join((first, second, third))

    def _label(self, result: RunResult) -> str:
        for run in self.runs:
            if run.result is result:
                return run.label
        return result.scenario

    def missing_template_scenarios(self) -> list[str]:
        return [n for n in TEMPLATE_SCENARIOS if n not in self.groups]

    def recommendation(self) -> str:
        if not self.results:
            return "NOT APPROVED: nothing was measured (run with --quaero-scenario=all)."
        if self.failed:
            return "NOT APPROVED for production. Failing criteria: " + "; ".join(
                _describe_failure(v, self._label(r)) for r, v in self.failed) + "."
        missing = self.missing_template_scenarios()
        ran = _names([run.label for run in self.runs])
        if missing:
            return (f"NOT YET APPROVED: every criterion passed in {ran}, but approval needs all of the template's "
                    f"scenarios and {_names(missing)} {'was' if len(missing) == 1 else 'were'} not measured "
                    "(run with --quaero-scenario=all).")
        return f"APPROVED FOR PRODUCTION: every criterion passed in {ran}."

    # ------------------------------------------------------------ configuration

    def configuration(self) -> None:
        s = self.ctx.settings
        pragmas = self.results[0].pragmas if self.results else {}
        self.add("## Test Configuration", "", "### System Configuration")
        self.add(f"- **Worker Pool Concurrency:** {s.workers} workers ({s.worker_mode} mode, worker k starts "
                 f"k x {s.describe('stagger')} after the pool)")
        timeout = f"{s.busy_timeout_ms}ms ({s.busy_timeout_ms / 1000:g} seconds)"
        if pragmas:
            timeout += f"; read back from SQLite: {pragmas.get('busy_timeout_ms')}ms"
        self.add(f"- **SQLite Busy Timeout:** {timeout}")
        self.add(f"- **Retry Logic:** {s.retry_attempts} attempts with exponential backoff "
                 f"({s.describe('retry_backoff')} initial delay, doubled per retry)")
        self.add(f"- **Queue Type:** goqite-backed persistent message queue (queue {s.queue_name!r}, visibility "
                 f"timeout {s.describe('visibility_timeout')}, max receive {s.max_receive}, poll interval "
                 f"{s.describe('poll_interval')})")
        if pragmas:
            journal = str(pragmas.get("journal_mode", "?"))
            mode = "WAL mode enabled" if journal.lower() == "wal" else f"journal_mode {journal} (WAL off)"
            db_line = (f"SQLite {pragmas.get('sqlite_version', '?')} with {mode} (read back: journal_mode={journal}, "
                       f"synchronous={pragmas.get('synchronous')}, "
                       f"cache {int(pragmas.get('cache_size_kib', 0)) // 1024}MB)")
        else:
            db_line = (f"SQLite with WAL mode {'enabled' if s.wal else 'disabled'} (configured; "
                       + not_measured("no run read the pragmas back") + ")")
        self.add(f"- **Database:** {db_line}")
        self.add(f"- **Simulated Work per Job:** {s.describe('job_time')} (seed {s.seed}); "
                 f"BEGIN IMMEDIATE {'on' if s.begin_immediate else 'off'}")
        disabled = sorted({f for run in self.runs for f in (run.result.extra.get("disabled_fixes") or [])
                           if isinstance(f, str)})
        if disabled:
            self.add(f"- **Fixes disabled:** {', '.join(disabled)} (--quaero-disable; the runs measured the queue "
                     "without them)")
        differing = [run.label for run in self.runs if _differs(run.result.settings, s)]
        if differing:
            self.add(f"- **Per-run overrides:** {_names(differing)} ran with settings that differ from the "
                     "session's (marker or quaero_run keywords); see the JSON results for each run's settings")
        self.add("", "### Test Scenarios")
        for name in _section_names(self.groups):
            runs = self.groups.get(name, [])
            base = BUILTIN.get(name)
            parents = runs[0].result.parents if runs else base.parents  # type: ignore[union-attr]
            children = runs[0].result.children_per_parent if runs else base.children  # type: ignore[union-attr]
            if runs:
                state = "; ".join(f"{r.label}: {'PASS' if r.result.passed else 'FAIL'} "
                                  f"({r.result.jobs_completed}/{r.result.total_jobs} completed)" for r in runs)
            else:
                state = _not_run(name)
            self.add(f"- **{name.capitalize()} Load:** {parents} parent jobs × {children} child URLs each = "
                     f"{parents * children} total jobs ({state})")
        self.add("", "---", "")

    # ------------------------------------------------------------ results tables

    def test_results(self) -> None:
        self.add("## Test Results", "")
        for name in _section_names(self.groups):
            runs = self.groups.get(name, [])
            self.add(f"### {_title(name, _expected_jobs(name, runs))}", "")
            if not runs:
                self.add(_not_run(name) + ".", "")
                continue
            for run in runs:
                if len(runs) > 1 or run.result.extra.get("origin"):
                    origin = run.result.extra.get("origin")
                    self.add(f"Run {run.result.run_id}" + (f" (from {origin})" if origin else "") + ":", "")
                self.add(*_table(criteria_rows(run.result)), "")
        self.add("---", "")

    # ------------------------------------------------------------ detailed metrics

    def lock_resilience(self) -> None:
        t = self.totals
        self.add("## Detailed Metrics", "", "### Database Lock Resilience", "", "#### SQLITE_BUSY Error Analysis", "```")
        befores = [(run, b) for run in self.runs if (b := _before_fixes(run.result)) is not None]
        per_run = ", ".join(f"{run.label}: {run.result.busy_errors}" for run in self.runs)
        after = f"{t.busy} errors detected" + (f" ({per_run})" if len(self.runs) > 1 else "") if self.results \
            else not_measured("no scenario ran (--quaero-scenario)")
        if befores:
            before_total = sum(int(b["busy_errors"]) for _, b in befores)
            after_same = sum(run.result.busy_errors for run, _ in befores)
            self.add(f"Before Fixes: {before_total} errors detected ("
                     + ", ".join(f"{run.label}: {b['busy_errors']}" for run, b in befores) + ")")
            self.add(f"After Fixes:  {after}")
            if before_total:
                improvement = 100.0 * (before_total - after_same) / before_total
                self.add(f"Improvement:  {improvement:.1f}% error {'elimination' if after_same == 0 else 'reduction'}"
                         f" ({before_total} -> {after_same})")
            else:
                self.add("Improvement:  none to measure: the before-fixes run met no lock error either")
        else:
            errors = [f"{run.label}: {e}" for run in self.runs if (e := _comparison_error(run.result))]
            why = (f"the before-fixes run failed ({'; '.join(errors)})" if errors
                   else "needs the before-fixes run of --quaero-compare-fixes")
            self.add(f"Before Fixes: {not_measured(why)}")
            self.add(f"After Fixes:  {after}")
            self.add(f"Improvement:  {not_measured(why)}")
        for run in self.runs:
            rows = (_comparison(run.result) or {}).get("ablation") or []
            if not isinstance(rows, list) or not rows:
                continue
            self.add("", f"Each fix alone turned off ({run.label}; busy errors, change against the run above):")
            for row in rows:
                if not isinstance(row, dict):
                    continue
                title = row.get("title") or row.get("fix", "?")
                if row.get("error"):
                    self.add(f"  - without {title}: {not_measured('that run failed: ' + str(row['error']))}")
                    continue
                self.add(f"  - without {title}: {row.get('busy_errors')} busy errors "
                         f"({int(row.get('delta_busy_errors', 0)):+d}), {row.get('retries')} retries, "
                         f"{float(row.get('throughput', 0.0)):.1f} jobs/s")
        self.add("```", "", "#### Retry Success Rate")
        met = t.successful_retries + t.exhausted
        if not self.results:
            why = not_measured("no scenario ran (--quaero-scenario)")
            for label in ("Total Retry Operations", "Successful Retries", "Failed Retries", "Success Rate"):
                self.add(f"- **{label}:** {why}")
        else:
            self.add(f"- **Total Retry Operations:** {met} (operations that met a lock error, of {t.operations} "
                     f"database operations; {t.retries} retry attempts in all)")
            self.add(f"- **Successful Retries:** {t.successful_retries}")
            self.add(f"- **Failed Retries:** {t.exhausted} (gave up after {self.ctx.settings.retry_attempts} attempts)")
            if met:
                self.add(f"- **Success Rate:** {100.0 * t.successful_retries / met:.1f}%")
            else:
                self.add("- **Success Rate:** " + not_measured(
                    f"no operation met a lock error ({t.busy} busy events), so no retry happened; more contention "
                    "(for example --quaero-workers=8 or --quaero-compare-fixes) exercises the retries"))
        self.add("", "#### Average Retry Attempts per Operation")
        for label, ops in (("SaveJob Operations", ("save_job",)), ("Queue Delete Operations", ("queue_delete",)),
                           ("Overall Average", None)):
            self.add(f"- **{label}:** {self._attempts(ops)}")
        self.add("")

    def _attempts(self, ops: tuple[str, ...] | None) -> str:
        operations = attempts = 0
        for result in self.results:
            for op, data in result.retry.items():
                if ops is None or op in ops:
                    operations += int(data.get("operations", 0))
                    attempts += int(data.get("attempts", 0))
        if not operations:
            name = "any operation" if ops is None else ", ".join(ops)
            return not_measured(f"no {name} ran in this session (--quaero-scenario)")
        return f"{attempts / operations:.3f} attempts ({attempts} attempts for {operations} operations)"

    def lifecycle(self) -> None:
        t = self.totals
        self.add("### Queue Message Lifecycle", "", "#### Message Processing Statistics")
        if not self.results:
            why = not_measured("no scenario ran (--quaero-scenario)")
            for label in ("Total Messages Enqueued", "Total Messages Deleted", "Deletion Failure Count",
                          "Average Message Processing Time", "Peak Queue Length"):
                self.add(f"- **{label}:** {why}")
        else:
            delete_failures = sum(int(r.retry.get("queue_delete", {}).get("exhausted", 0)) for r in self.results)
            self.add(f"- **Total Messages Enqueued:** {t.enqueued}")
            self.add(f"- **Total Messages Deleted:** {t.deleted}")
            self.add(f"- **Deletion Failure Count:** {t.left} ({delete_failures} delete calls gave up after retries; "
                     f"{t.left} messages left in the queue, {t.dead} of them dead after max_receive)")
            if t.processing_times:
                self.add(f"- **Average Message Processing Time:** "
                         f"{_duration(sum(t.processing_times) / len(t.processing_times))} (receive to done, "
                         f"{len(t.processing_times)} jobs)")
            else:
                self.add("- **Average Message Processing Time:** " + not_measured("no job completed"))
            self.add(f"- **Peak Queue Length:** {t.peak} (highest of {t.samples} queue samples)")
        self.add("", "#### Queue Performance Under Load", "```")
        for name in _section_names(self.groups):
            runs = self.groups.get(name, [])
            if not runs:
                self.add(f"{name.capitalize()} Load ({_expected_jobs(name, runs)} jobs):",
                         f"  - Peak Queue Length: {_not_run(name)}", f"  - Average Processing Time: {_not_run(name)}",
                         "  ")
                continue
            for run in runs:
                r = run.result
                avg = _duration(r.avg_processing_time) if r.processing_times else not_measured("no job completed")
                self.add(f"{run.label.capitalize()} Load ({r.total_jobs} jobs):",
                         f"  - Peak Queue Length: {r.peak_queue_length}", f"  - Average Processing Time: {avg}", "  ")
        self.out[-1] = "```"
        self.add("")

    def hierarchy(self) -> None:
        t = self.totals
        self.add("### Job Hierarchy Integrity", "", "#### Parent-Child Relationship Validation")
        if not self.results:
            why = not_measured("no scenario ran (--quaero-scenario)")
            for label in ("Total Parent Jobs Created", "Total Child Jobs Created", "Orphaned Jobs Count",
                          "Missing Children Count", "Hierarchy Integrity"):
                self.add(f"- **{label}:** {why}")
        else:
            self.add(f"- **Total Parent Jobs Created:** {t.parents_found} (of {t.parents_expected} planned)")
            self.add(f"- **Total Child Jobs Created:** {t.children_found} (of {t.children_expected} planned)")
            self.add(f"- **Orphaned Jobs Count:** {t.orphans}")
            self.add(f"- **Missing Children Count:** {t.missing_children}")
            per_run = ", ".join(f"{run.label} {_pct(run.result.hierarchy_integrity)}" for run in self.runs)
            self.add(f"- **Hierarchy Integrity:** {_pct(t.min_integrity)}"
                     + (f" (lowest of {per_run})" if len(self.runs) > 1 else ""))
        self.add("", "#### Database Consistency Checks", "```sql")
        if not self.results:
            self.add("-- " + not_measured("no scenario ran, so no query was run (--quaero-scenario)"))
        first = True
        for title in ("Verify no orphaned children", "Verify no missing expected children"):
            query = _query(self.results[0], title) if self.results else None
            if query is None:
                continue
            if not first:
                self.add("")
            first = False
            self.add(f"-- {title}", *query["sql"].rstrip(";").splitlines())
            self.out[-1] += ";"
            self.add("")
            for run in self.runs:
                q = _query(run.result, title)
                if q is None:
                    self.add(f"-- Result ({run.label}): " + not_measured("this run recorded no such query"))
                elif title.startswith("Verify no orphaned"):
                    orphans = int(q["rows"][0][0]) if q["rows"] else 0
                    self.add(f"-- Result ({run.label}, run {run.result.run_id}): {orphans} orphaned children "
                             f"{_mark(orphans == 0)}")
                else:
                    self.add(*_child_count_result(run, q))
        self.add("```", "")

    def workers(self) -> None:
        self.add("### Worker Pool Performance", "", "#### Worker Startup and Staggering", "```")
        if not self.results:
            self.add(not_measured("no scenario ran, so no worker started (--quaero-scenario)"))
        for i, run in enumerate(self.runs):
            r = run.result
            if i:
                self.add("")
            setting = float(r.settings.get("stagger", 0.0))
            verdict = _verdict(r, "worker_staggering")
            judged = f"{verdict['measured']}, {verdict['required']}" if verdict else "none"
            self.add(f"{run.label} ({r.settings.get('workers')} {r.settings.get('worker_mode')} workers, stagger "
                     f"setting {format_duration(setting)}; verdict: {judged}):")
            pool = r.phase_offset("pool_started") or 0.0
            tolerance = _stagger_tolerance(verdict)
            previous: float | None = None
            for worker in sorted(r.workers, key=lambda w: w.index):
                if worker.start_offset is None or worker.started_wall is None:
                    self.add(f"{_worker_name(worker)} Startup: " + not_measured(
                        f"never started: the run ended (t+{r.execution_time:.3f}s) before its start at "
                        f"{worker.index} x {format_duration(setting)}"))
                    continue
                line = (f"{_worker_name(worker)} Startup: {_utc(worker.started_wall, millis=True)} "
                        f"({(worker.start_offset - pool) * 1000:.0f}ms after pool start)")
                if previous is not None:
                    gap = worker.start_offset - previous
                    # each gap judged as the criterion judges them, so one unstarted worker does not
                    # make the gaps that were measured look wrong
                    ok = abs(gap - setting) <= tolerance if tolerance is not None else (
                        verdict["passed"] if verdict else None)
                    line = line[:-1] + f"; {gap * 1000:.0f}ms after the previous worker, setting " \
                        f"{format_duration(setting)}: {'stagger confirmed' if ok else 'stagger NOT confirmed'}) {_mark(ok)}"
                previous = worker.start_offset
                self.add(line)
            self.add("", "Worker Utilization (busy share of each worker's own lifetime):")
            for worker in sorted(r.workers, key=lambda w: w.index):
                if worker.start_offset is None:
                    self.add(f"  - {_worker_name(worker)}: " + not_measured("the worker never started"))
                    continue
                self.add(f"  - {_worker_name(worker)}: {_pct(worker.utilization)} ({worker.jobs} jobs, "
                         f"{worker.busy_seconds:.3f}s busy)")
            utilization = [w.utilization for w in r.workers if w.start_offset is not None]
            if utilization:
                self.add(f"  - Average: {_pct(sum(utilization) / len(utilization))} (of {len(utilization)} started "
                         "workers)")
            else:
                self.add("  - Average: " + not_measured("no worker started"))
        self.add("```", "", "#### Queue Statistics During Test", "```")
        if not self.results:
            self.add(not_measured("no scenario ran, so the queue was never sampled (--quaero-scenario)"))
        for i, run in enumerate(self.runs):
            if i:
                self.add("")
            self.add(*_queue_over_time(run))
        self.add("```", "")

    def throughput(self) -> None:
        self.add("### System Throughput", "", "#### Performance Metrics", "```")
        for name in _section_names(self.groups):
            runs = self.groups.get(name, [])
            if not runs:
                self.add(f"{name.capitalize()} Load ({_expected_jobs(name, runs)} jobs):")
                self.add(*(f"  - {label}: {_not_run(name)}" for label in ("Total Time", "Jobs/Second", "95th Percentile")))
                self.add("  ")
                continue
            for run in runs:
                r = run.result
                self.add(f"{run.label.capitalize()} Load ({r.total_jobs} jobs):",
                         f"  - Total Time: {_duration(r.execution_time)} ({r.jobs_completed} jobs completed)",
                         f"  - Jobs/Second: {r.throughput:.1f}")
                if r.processing_times:
                    self.add(f"  - 95th Percentile: {_duration(r.p95)} processing (receive to done); "
                             f"{_duration(r.latency_p95)} latency (enqueue to done)")
                else:
                    self.add("  - 95th Percentile: " + not_measured("no job completed"))
                self.add("  ")
        self.out[-1] = "```"
        self.add("", "#### Scalability Analysis", "```", "Performance Scaling:")
        s = self.scaling
        for row in s.rows:
            self.add(row)
        self.add("", f"Linear scaling achieved: {s.verdict_text}", f"Rule: {s.rule}", "```", "", "---", "")

    # ------------------------------------------------------------ observations, issues

    def observations(self) -> None:
        t = self.totals
        self.add("## Observations", "", "### Expected Behavior Confirmed")
        if not self.results:
            why = not_measured("no scenario ran (--quaero-scenario)")
            for label in ("Worker Staggering", "Retry Logic", "Queue Message Processing", "Job Hierarchy Preservation",
                          "Progress Tracking"):
                self.add(f"- {NONE_ICON} **{label}:** {why}")
        else:
            stagger = [(run, _verdict(run.result, "worker_staggering")) for run in self.runs]
            ok = all(v is not None and v["passed"] for _, v in stagger)
            self.add(f"- {_mark(ok)} **Worker Staggering:** measured " + "; ".join(
                f"{run.label} {v['measured']} (required {v['required']})" if v else f"{run.label} no verdict"
                for run, v in stagger) + f"; {t.busy} lock errors in the whole session")
            if t.busy == 0:
                self.add(f"- {NONE_ICON} **Retry Logic:** " + not_measured(
                    "no lock error occurred, so the exponential backoff was never exercised (more contention, "
                    "e.g. --quaero-workers=8 or --quaero-compare-fixes, exercises it)"))
            else:
                self.add(f"- {_mark(t.exhausted == 0)} **Retry Logic:** {t.busy} lock errors met; "
                         f"{t.successful_retries} operations succeeded after retry, {t.exhausted} gave up")
            self.add(f"- {_mark(t.deleted == t.enqueued and t.left == 0)} **Queue Message Processing:** "
                     f"{t.deleted}/{t.enqueued} messages processed and deleted, {t.left} left")
            self.add(f"- {_mark(t.min_integrity >= 100.0)} **Job Hierarchy Preservation:** {t.orphans} orphans, "
                     f"{t.missing_children} missing children, integrity {_pct(t.min_integrity)} under "
                     f"{self.ctx.settings.workers} concurrent workers and {t.parents_expected} concurrent producers")
            self.add(f"- {_mark(t.progress_mismatches == 0)} **Progress Tracking:** parent progress counters matched "
                     f"their children's statuses for {t.parents_found - t.progress_mismatches} of {t.parents_found} "
                     "parents")
        self.add("", "### Performance Characteristics")
        s = self.scaling
        self.add(f"- **Linear Scaling:** {s.characteristic}")
        if self.results:
            share = 100.0 * t.busy / t.operations if t.operations else 0.0
            self.add(f"- **Low Contention:** {t.busy} lock errors in {t.operations} database operations ({share:.2f}%), "
                     f"{t.busy_wait:.3f}s spent waiting on locks")
            if t.busy == 0:
                handling = "no retry was needed (no lock error occurred)"
            elif t.exhausted == 0:
                handling = f"All retry operations successful ({t.successful_retries} operations retried)"
            else:
                handling = f"{FAIL_ICON} {t.exhausted} operations gave up after every retry"
            self.add(f"- **Robust Error Handling:** {handling}")
            rates = ", ".join(f"{run.label} {_pct(run.result.completion_rate)}" for run in self.runs)
            consistent = all(run.result.completion_rate >= 100.0 for run in self.runs)
            self.add("- **Consistent Results:** "
                     + ("100% job completion across all test scenarios run" if consistent else "completion varied")
                     + f" ({rates})")
        else:
            why = not_measured("no scenario ran (--quaero-scenario)")
            for label in ("Low Contention", "Robust Error Handling", "Consistent Results"):
                self.add(f"- **{label}:** {why}")
        self.add("", "### Edge Cases Handled")
        if self.results:
            producer_errors = sum(len(r.producer_errors) for r in self.results)
            self.add(f"- **Concurrent Job Creation:** {t.parents_expected} parents created by as many concurrent "
                     f"producers; {producer_errors} producer errors, {t.parents_found} parents and {t.children_found} "
                     "children found afterwards")
            receives = sum(int(r.retry.get("queue_receive", {}).get("operations", 0)) for r in self.results)
            deletes = sum(int(r.retry.get("queue_delete", {}).get("operations", 0)) for r in self.results)
            duplicates = sum(r.duplicate_completions for r in self.results)
            self.add(f"- **Rapid Queue Operations:** {t.enqueued} sends, {receives} receives and {deletes} deletes; "
                     f"{duplicates} jobs processed twice, {sum(r.redeliveries for r in self.results)} redeliveries")
        else:
            self.add("- **Concurrent Job Creation:** " + not_measured("no scenario ran (--quaero-scenario)"))
            self.add("- **Rapid Queue Operations:** " + not_measured("no scenario ran (--quaero-scenario)"))
        for run in self.runs:
            faults = run.result.extra.get("faults")
            if isinstance(faults, dict):
                injected = [f for f in faults.get("injected") or [] if isinstance(f, dict)]
                kinds = ", ".join(f"{f.get('fault')} at t+{float(f.get('at') or 0):.2f}s" for f in injected) or "none"
                self.add(f"- **Injected Faults ({run.label}):** {len(injected)} injected ({kinds}); "
                         f"{len(faults.get('missed') or [])} never fired")
            contention = run.result.extra.get("contention")
            if isinstance(contention, dict):
                loads = [l for l in contention.get("loads") or [] if isinstance(l, dict)]
                self.add(f"- **Outside Contention ({run.label}):** "
                         + (", ".join(f"{l.get('kind')} ({l.get('busy_errors', 0)} busy errors of its own)"
                                      for l in loads) or "no load")
                         + (f"; WAL peaked at {contention['wal_max_bytes']} bytes"
                            if isinstance(contention.get("wal_max_bytes"), int) else ""))
        self.add("- **Database Connection Pooling:** " + not_measured(
            "every worker and producer opens its own connection; pool efficiency is not instrumented by any option"))
        self.add("- **Memory Usage:** " + not_measured("pytest-quaero does not sample memory; no option measures it"))
        self.add("", "---", "")

    def remaining_issues(self) -> None:
        self.add("## Remaining Issues (if any)", "", "### Critical Issues")
        if not self.results:
            self.add(not_measured("no scenario ran (--quaero-scenario)"))
        elif self.failed:
            for r, v in self.failed:
                self.add(f"- **{self._label(r)} — {v['title']}:** measured {v['measured']}, required {v['required']}"
                         + (f" ({v['detail']})" if v.get("detail") else ""))
        else:
            self.add(f"None identified: all {sum(len(r.verdicts) for r in self.results)} criteria passed.")
        high: list[str] = []
        medium: list[str] = []
        low: list[str] = []
        for run in self.runs:
            r, label = run.result, run.label
            totals = r.retry_totals
            if totals.exhausted:
                high.append(f"{label}: {totals.exhausted} lock errors escaped every retry")
            if totals.fast_busy:
                high.append(f"{label}: {totals.fast_busy} lock errors came back well before busy_timeout "
                            "(a lock-upgrade or snapshot bug, not contention)")
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
            low_workers = [w for w in r.workers if w.start_offset is not None and w.utilization < UTILIZATION_TARGET]
            unstarted = [_worker_name(w) for w in r.workers if w.start_offset is None]
            if unstarted:
                low.append(f"{label}: {_names(unstarted)} never started before the run ended "
                           f"({_duration(r.execution_time)})")
            if low_workers:
                low.append(f"{label}: worker utilization below the template's {UTILIZATION_TARGET:.0f}% target ("
                           + ", ".join(f"{_worker_name(w)} {_pct(w.utilization)}" for w in low_workers) + ")")
        checks = {
            "High Priority Issues": (high, "escaped lock errors, fast lock errors, job/producer/worker errors, timeouts"),
            "Medium Priority Issues": (medium, "lock errors absorbed by retries, redeliveries, dead messages"),
            "Low Priority Issues": (low, f"worker utilization below {UTILIZATION_TARGET:.0f}%"),
        }
        for heading, (found, checked) in checks.items():
            self.add("", f"### {heading}")
            if not self.results:
                self.add(not_measured("no scenario ran (--quaero-scenario)"))
            elif found:
                self.add(*(f"- {item}" for item in found))
            else:
                self.add(f"None identified (checked: {checked}).")
        self.add("", "---", "")

    # ------------------------------------------------------------ recommendations

    def recommendations(self) -> None:
        t = self.totals
        self.add("## Recommendations", "", "### Production Readiness Assessment")
        if self.overall_passed and not self.missing_template_scenarios():
            self.add(f"**Status:** {PASS_ICON} **APPROVED FOR PRODUCTION**")
        elif self.failed or not self.results:
            self.add(f"**Status:** {FAIL_ICON} **NOT APPROVED**")
        else:
            self.add(f"**Status:** {NONE_ICON} **NOT YET APPROVED** (not every template scenario was measured)")
        self.add("", self.recommendation(), "")
        if self.results:
            self.add(f"Pass/fail criteria across {_names([run.label for run in self.runs])}:", "")
            per_run = ", ".join(f"{run.label} {run.result.busy_errors}" for run in self.runs)
            self.add(f"- {_mark(t.busy == 0)} Zero SQLITE_BUSY errors across all test scenarios: {t.busy} ({per_run})")
            self.add(f"- {_mark(t.deleted == t.enqueued and t.left == 0)} 100% queue message deletion success rate: "
                     f"{t.deleted}/{t.enqueued} deleted")
            self.add(f"- {_mark(t.min_integrity >= 100.0)} 100% job hierarchy integrity maintenance: "
                     f"{_pct(t.min_integrity)} at worst")
            s = self.scaling
            self.add(f"- {_mark(s.linear)} Linear performance scaling up to {s.largest} concurrent jobs: {s.verdict_text}")
            if t.busy == 0:
                self.add(f"- {NONE_ICON} Robust retry logic handling transient database locks: " + not_measured(
                    "no lock error occurred, so retries were not exercised"))
            else:
                self.add(f"- {_mark(t.exhausted == 0)} Robust retry logic handling transient database locks: "
                         f"{t.successful_retries} operations recovered, {t.exhausted} gave up")
        self.add("", "### Configuration Tuning", "", "#### Recommended Production Settings")
        self.add("The effective settings of this session, in Quaero's TOML format; `pytest --quaero-config=FILE` "
                 "loads them back" + (" (they passed every criterion measured)." if self.overall_passed else
                                      " (they did NOT pass every criterion: tune before adopting them)."))
        self.add("```toml", *to_toml(self.ctx.settings).rstrip("\n").splitlines(), "```", "")
        self.add("#### Performance Optimization Suggestions")
        if self.results:
            self.add(f"1. **Monitor Queue Length:** Set up alerts for queue length > 100 messages (this session peaked "
                     f"at {t.peak}, averaging {t.avg_queue:.1f})")
            self.add(f"2. **Database Monitoring:** Track SQLITE_BUSY error rate (should remain at 0; this session: "
                     f"{t.busy})")
            self.add(f"3. **Worker Utilization:** Ensure workers maintain >{UTILIZATION_TARGET:.0f}% utilization "
                     f"(this session averaged {_pct(t.avg_utilization)})")
        else:
            why = not_measured("no scenario ran (--quaero-scenario)")
            self.add(f"1. **Monitor Queue Length:** {why}", f"2. **Database Monitoring:** {why}",
                     f"3. **Worker Utilization:** {why}")
        self.add("4. **Memory Usage:** Monitor memory consumption during peak load periods ("
                 + not_measured("pytest-quaero does not sample memory") + ")", "")
        self.add("### Future Testing Needs", "", "#### Recommended Test Scenarios")
        longest = max((r.total_duration for r in self.results), default=0.0)
        self.add(f"1. **Extended Duration Tests:** 24-hour continuous operation tests (longest run in this session: "
                 f"{_duration(longest)})")
        self.add(f"2. **Resource Exhaustion:** Tests with constrained memory/CPU (this session: "
                 f"{self.ctx.machine.get('cpu_count', '?')} CPUs, unconstrained)")
        self.add("3. **Network Failure Simulation:** Tests with intermittent connectivity (not covered: the queue is a "
                 "local SQLite file)")
        self.add("4. **Mixed Workload Tests:** Combination of different job types simultaneously (this session ran "
                 "one job type: crawler_url children of parent jobs)", "")
        self.monitoring()

    def monitoring(self) -> None:
        t = self.totals
        self.add("#### Monitoring and Alerting", "```")
        if self.results:
            seconds = sum(r.execution_time for r in self.results)
            rate = t.deleted / seconds if seconds else 0.0
            failure = 100.0 * t.failed_jobs / t.children_expected if t.children_expected else 0.0
            p95_latency = max((r.latency_p95 for r in self.results), default=0.0)
            alerts = [
                ("Critical Alerts:", None),
                ("SQLITE_BUSY error rate > 0 per hour", f"{t.busy} in {_duration(seconds)}", t.busy > 0),
                ("Queue message processing rate < 1 msg/sec", f"{rate:.1f} msg/sec", rate < 1),
                ("Worker utilization < 50% for > 10 minutes",
                 f"average {_pct(t.avg_utilization)} over {_duration(seconds)}",
                 t.avg_utilization < 50 and seconds > 600),
                ("Job failure rate > 5% in any 1-hour period", f"{failure:.1f}%", failure > 5),
                ("", None),
                ("Warning Alerts:", None),
                ("Queue length > 100 messages", f"peak {t.peak}", t.peak > 100),
                ("Job completion time > 10 minutes (95th percentile)", f"p95 latency {_duration(p95_latency)}",
                 p95_latency > 600),
                ("Memory usage > 80% of available", not_measured("pytest-quaero does not sample memory"), None),
            ]
            for alert in alerts:
                if alert[1] is None:
                    self.add(alert[0])
                    continue
                text, value, fired = alert  # type: ignore[misc]
                state = "" if fired is None else (" -> would fire" if fired else " -> quiet")
                self.add(f"  - {text:<52} (this session: {value}{state})")
        else:
            self.add("Critical Alerts:", "  - SQLITE_BUSY error rate > 0 per hour",
                     "  - Queue message processing rate < 1 msg/sec", "  - Worker utilization < 50% for > 10 minutes",
                     "  - Job failure rate > 5% in any 1-hour period", "", "Warning Alerts:",
                     "  - Queue length > 100 messages",
                     "  - Job completion time > 10 minutes (95th percentile)", "  - Memory usage > 80% of available",
                     "", "(" + not_measured("no scenario ran, so no alert can be checked against this session") + ")")
        self.add("```", "")
        self.add("### Deployment Checklist")
        pragmas = self.results[0].pragmas if self.results else {}
        wal = str(pragmas.get("journal_mode", "")).lower() == "wal"
        busy = int(pragmas.get("busy_timeout_ms", 0) or 0)
        json_note = f"this session's JSON results: {self.ctx.json_path}" if self.ctx.json_path else \
            "no JSON written; --quaero-json=PATH records one"
        items = [
            ("Apply database schema updates", "this run created the goqite and crawl_jobs schemas on a fresh file"
             if self.results else "no run"),
            ("Configure production queue settings", "see Recommended Production Settings above"),
            ("Enable WAL mode in SQLite configuration",
             f"this run read back journal_mode={pragmas.get('journal_mode')}" + ("" if wal else ": NOT WAL")
             if pragmas else not_measured("no run read the pragmas back")),
            ("Set appropriate busy timeout (10000ms recommended)",
             f"this run read back busy_timeout={busy}ms" if pragmas else not_measured("no run read the pragmas back")),
            ("Implement monitoring dashboards", "see Monitoring and Alerting above"),
            ("Set up alerting for critical metrics", "see Monitoring and Alerting above"),
            ("Conduct performance baseline measurement", json_note),
            ("Train operations team on monitoring procedures", "an operational step, not measurable here"),
        ]
        # Unchecked on purpose: these are deployment steps for people; the notes say what this run verified.
        self.add(*(f"- [ ] {item} ({note})" for item, note in items), "", "---", "")

    # ------------------------------------------------------------ appendix

    def appendix(self) -> None:
        self.add("## Appendix", "", "### Sample Log Excerpts", "", "#### Successful Retry Operation")
        # a retry that succeeded, as the template shows; else whatever retry the log holds
        with_retry = [(run, run.result.log_excerpts) for run in self.runs if run.result.log_excerpts.get("retry")]
        retry = next((pair for pair in with_retry if pair[1].get("retry_outcome") == "succeeded"), None) or next(
            iter(with_retry), None)
        if retry is not None:
            run, excerpts = retry
            outcome = excerpts.get("retry_outcome") or "unfinished"
            self.add(f"From {run.label} (run {run.result.run_id}); the operation {outcome}"
                     + ("." if outcome == "succeeded" else ": no retry in this session succeeded."))
            self.add("```", *excerpts["retry"], "```")
        elif not self.results:
            self.add(not_measured("no scenario ran, so there is no log (--quaero-scenario)"))
        else:
            self.add(f"None happened: no operation met a lock error in this session ({self.totals.busy} busy events), "
                     "so the log holds no retry to show. More contention (e.g. --quaero-workers=8 or "
                     "--quaero-compare-fixes) produces retries.")
        self.add("", "#### Worker Staggering Verification")
        shown = False
        for run in self.runs:
            lines = run.result.log_excerpts.get("stagger") or []
            if lines:
                self.add(f"From {run.label} (run {run.result.run_id}):", "```", *lines, "```")
                shown = True
                break
        if not shown:
            self.add(not_measured("no run logged its worker starts" if self.results else
                                  "no scenario ran, so there is no log (--quaero-scenario)"))
        self.add("", "### Database Query Results", "")
        for heading, title in (("Queue Statistics Query", "Queue Statistics Query"),
                               ("Job Hierarchy Validation Query", "Job Hierarchy Validation Query"),
                               ("Parent Progress Query", "Parent progress against child statuses")):
            self.add(f"#### {heading}", "```sql")
            query = next((q for run in self.runs if (q := _query(run.result, title)) is not None), None)
            if query is None:
                self.add("-- " + not_measured("no scenario ran, so no query was run (--quaero-scenario)"))
            else:
                self.add(*query["sql"].rstrip(";").splitlines())
                self.out[-1] += ";"
                for run in self.runs:
                    self.add("", *_query_result(run, title))
            self.add("```", "")
        self.add("### Test Execution Timeline", "")
        for name in _section_names(self.groups):
            runs = self.groups.get(name, [])
            self.add(f"#### {_title(name, _expected_jobs(name, runs), lower=True)}", "```")
            if not runs:
                self.add(_not_run(name))
            for i, run in enumerate(runs):
                if len(runs) > 1:
                    self.add(("" if i == 0 else "\n") + f"run {run.result.run_id}:")
                for entry in run.result.timeline:
                    self.add(f"{_offset(float(entry['offset']))} {entry['label']}")
            self.add("```", "")
        self.add("---", "")

    def footer(self) -> None:
        v = self.ctx.versions
        conducted = f"pytest-quaero {v.get('plugin', '?')} (pytest {v.get('pytest', '?')})"
        if os.environ.get("GITHUB_ACTIONS") == "true":
            conducted += (f" in GitHub Actions, {os.environ.get('GITHUB_REPOSITORY', '?')} run "
                          f"{os.environ.get('GITHUB_RUN_ID', '?')}")
        sqlite = ", ".join(sorted({r.sqlite_version for r in self.results if r.sqlite_version})) or \
            v.get("sqlite", "?") + " (" + not_measured("no run") + ")"
        python = ", ".join(sorted({r.python_version for r in self.results if r.python_version})) or \
            v.get("python", "?")
        runs = sum(r.total_duration for r in self.results)
        duration = f"{_duration(runs)} of load runs" if self.results else not_measured("no scenario ran")
        if self.ctx.session_duration is not None:
            duration += f" in a {_duration(self.ctx.session_duration)} pytest session"
        status = ("PASS" if self.overall_passed else "FAIL") if self.results else \
            not_measured("no scenario ran (--quaero-scenario)")
        self.add(f"**Test Conducted By:** {conducted}", f"**Environment:** {self.environment()}",
                 f"**Database Version:** SQLite {sqlite}", f"**Python Version:** {python}",
                 f"**Test Duration:** {duration}", f"**Status:** {status}")

    def render(self) -> str:
        self.executive_summary()
        self.configuration()
        self.test_results()
        self.lock_resilience()
        self.lifecycle()
        self.hierarchy()
        self.workers()
        self.throughput()
        self.observations()
        self.remaining_issues()
        self.recommendations()
        self.appendix()
        self.footer()
        return "\n".join(self.out) + "\n"


def render(ctx: ReportContext) -> str:
    """The filled-in template for ``ctx.results``."""
    return _Report(ctx).render()
