"""The report's opening: Executive Summary, Test Configuration, and the Test Results tables.

Also the wording other sections repeat: the environment line (again in the footer) and
the recommendation (again under Production Readiness Assessment). Reads two keys of
``RunResult.extra`` besides the run's figures: ``disabled_fixes`` (``--quaero-disable``)
and ``origin`` (the test that ran the scenario through the ``quaero_run`` fixture).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.report.figures import (
    ReportFigures,
    expected_jobs,
    find_verdict,
    section_names,
)
from pytest_quaero.report.scaling import differences
from pytest_quaero.report.wording import (
    FAIL_ICON,
    NONE_ICON,
    POSTGRESQL,
    SQLITE,
    backend_of,
    cell,
    describe_failure,
    duration,
    first_of_each,
    hard_breaks,
    mark,
    names,
    not_measured,
    not_run,
    pct,
    plural,
    status,
    title,
    utc,
)

__all__ = [
    "criteria_rows",
    "criteria_table",
    "environment",
    "executive_summary",
    "key_findings",
    "recommendation",
    "result_tables",
    "scenario_plan",
    "system_configuration",
]

TEMPLATE_TITLE = "# Job Load Test Results"

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


# ---------------------------------------------------------------- criteria tables (also the step summary)


def criteria_rows(result: RunResult) -> list[tuple[str, str, str, str]]:
    """The template's table for one run: metric, measured result, criterion, status."""
    rows: list[tuple[str, str, str, str]] = []
    created = result.children_found
    rows.append(("Total Jobs Created", f"{created} ({result.parents} parents x {result.children_per_parent} children)",
                 f"{result.total_jobs} planned", mark(created == result.total_jobs)))
    used = set()
    for row_title, key in _TABLE_ROWS[1:]:
        assert key is not None
        verdict = find_verdict(result, key)
        used.add(key)
        if verdict is None:
            rows.append((row_title, not_measured(f"no {key} verdict in this run"), "-", NONE_ICON))
            continue
        measured = verdict["measured"] + (f" ({verdict['detail']})" if verdict.get("detail") else "")
        # the verdict's own title where the backend renames the row (PostgreSQL: "Lock Errors")
        title = verdict["title"] if key == "sqlite_busy_errors" and verdict.get("title") else row_title
        rows.append((title, measured, verdict["required"], status(verdict["passed"])))
    for verdict in result.verdicts:  # criteria beyond the template's (duplicates, baselines, user criteria)
        if verdict.get("criterion") in used:
            continue
        measured = verdict["measured"] + (f" ({verdict['detail']})" if verdict.get("detail") else "")
        rows.append((verdict["title"], measured, verdict["required"], status(verdict["passed"])))
    return rows


def criteria_table(rows: Iterable[tuple[str, str, str, str]]) -> list[str]:
    """``rows`` as the template's Markdown table: Metric | Result | Pass/Fail Criteria | Status."""
    lines = ["| Metric | Result | Pass/Fail Criteria | Status |", "|--------|--------|-------------------|--------|"]
    lines += [f"| **{cell(a)}** | {cell(b)} | {cell(c)} | {cell(d)} |" for a, b, c, d in rows]
    return lines


# ---------------------------------------------------------------- Executive Summary


def environment(figures: ReportFigures) -> str:
    """Machine, versions and commit, on one line."""
    ctx = figures.ctx
    m, v = ctx.machine, ctx.versions
    sqlite = figures.results[0].sqlite_version if figures.results else v.get("sqlite", m.get("sqlite_version", "?"))
    firsts = first_of_each(figures.results)
    # a PostgreSQL run's database is the server (Python's sqlite3 is there, but nothing of the run used it)
    databases = [f"SQLite {first.sqlite_version}" if backend == SQLITE else f"PostgreSQL {server_version(first)}"
                 for backend, first in firsts.items()] or [f"{figures.words.name} {sqlite}" if figures.words.sqlite
                                                           else figures.words.name]
    parts = [
        f"{m.get('system', '?')} {m.get('release', '')} {m.get('machine', '')}".strip(),
        f"{m.get('cpu_count', '?')} CPUs",
        f"host {m.get('node', '?')}",
        f"Python {v.get('python', m.get('python_version', '?'))}",
        *databases,
        f"pytest-quaero {v.get('plugin', '?')}",
    ]
    commit = ctx.commit
    if commit.get("available"):
        parts.append(f"commit {commit.get('describe')}" + (f" on {commit['branch']}" if commit.get("branch") else ""))
    else:
        parts.append("commit " + not_measured(_git_problem(str(commit.get("error") or ""))))
    return ", ".join(parts)


def server_version(result: RunResult) -> str:
    """The PostgreSQL server's version a run read back (``extra["postgresql"]``, else its session settings)."""
    info = result.extra.get("postgresql")
    version = info.get("server_version") if isinstance(info, dict) else None
    return str(version or result.pragmas.get("server_version") or "?")


def _git_problem(error: str) -> str:
    """Why there is no commit, in words (git's own error text is not for a report)."""
    lowered = error.lower()
    if not error or "not a git repository" in lowered:
        return "the project is not in a git checkout"
    if "no such file" in lowered or "not found" in lowered:
        return "git is not installed"
    if "dubious ownership" in lowered:
        return "git refused the checkout (owned by another user: safe.directory)"
    if "does not have any commits" in lowered or "unknown revision" in lowered or "ambiguous argument" in lowered:
        return "the git checkout has no commit yet"
    return "git could not describe the checkout"


def key_findings(figures: ReportFigures) -> str:
    """Three sentences: what ran, what the database did, which criteria failed."""
    if not figures.results:
        return not_measured("no scenario ran, so there is nothing to summarise; run with --quaero-scenario=all")
    runs = "; ".join(
        f"{run.label} completed {run.result.jobs_completed}/{run.result.total_jobs} jobs in "
        f"{duration(run.result.execution_time)} ({run.result.throughput:.1f} jobs/s)"
        for run in figures.runs
    )
    t = figures.totals
    first = f"Ran {plural(len(figures.runs), 'scenario run')}: {runs}."
    second = (
        f"{figures.words.name} raised {plural(t.busy, 'lock error')} ({figures.words.codes}) in {t.operations} "
        "database operations, "
        f"{plural(t.successful_retries, 'operation')} recovered by retrying and {t.exhausted} gave up; "
        f"{t.deleted}/{t.enqueued} queue "
        f"messages were deleted and hierarchy integrity was {pct(t.min_integrity)} at worst."
    )
    if figures.failed:
        third = (f"{plural(len(figures.failed), 'criterion', 'criteria')} failed: "
                 + "; ".join(describe_failure(v, figures.label(r)) for r, v in figures.failed) + ".")
    else:
        third = f"All {figures.criteria_count} criteria passed."
    if figures.claims:
        third += " Not met beyond the criteria: " + "; ".join(figures.claims) + "."
    return " ".join((first, second, third))


def recommendation(figures: ReportFigures) -> str:
    """Approved only when every criterion passed in every template scenario."""
    if not figures.results:
        return "NOT APPROVED: nothing was measured (run with --quaero-scenario=all)."
    if figures.failed or figures.claims:
        failing = ("Failing criteria: " + "; ".join(describe_failure(v, figures.label(r)) for r, v in figures.failed)
                   + "." if figures.failed else "")
        claims = ("Template claims not met: " + "; ".join(figures.claims) + "." if figures.claims else "")
        return " ".join(part for part in ("NOT APPROVED for production.", failing, claims) if part)
    missing = figures.missing_template_scenarios()
    ran = names(figures.labels)
    if missing:
        return (f"NOT YET APPROVED: every criterion passed in {ran}, but approval needs all of the template's "
                f"scenarios and {names(missing)} {'was' if len(missing) == 1 else 'were'} not measured "
                "(run with --quaero-scenario=all).")
    return f"APPROVED FOR PRODUCTION: every criterion passed in {ran}."


def executive_summary(figures: ReportFigures) -> list[str]:
    if not figures.results:
        overall = not_measured("no scenario ran in this session (run with --quaero-scenario=light|medium|heavy|all)")
    else:
        verdicts = figures.criteria_count
        overall = (f"{'PASS' if figures.overall_passed else 'FAIL'} ({verdicts - len(figures.failed)} of "
                   f"{plural(verdicts, 'criterion', 'criteria')} passed in "
                   f"{plural(len(figures.results), 'scenario run')}"
                   + (f"; {plural(len(figures.claims), 'template claim')} not met" if figures.claims else "") + ")")
    if figures.own:
        overall += (f"; {plural(len(figures.own), 'run')} with a test's own settings judged by that test, not here "
                    "(see Test Results)")
    return [
        TEMPLATE_TITLE, "", "## Executive Summary", "",
        *hard_breaks([
            f"**Test Date:** {utc(figures.ctx.created)}",
            f"**Environment:** Quaero Job Queue Database Lock Fixes Validation ({environment(figures)})",
            f"**Overall Status:** {overall}",
            f"**Key Findings:** {key_findings(figures)}",
            f"**Recommendation:** {recommendation(figures)}",
        ]), "", "---", "",
    ]


# ---------------------------------------------------------------- Test Configuration


def system_configuration(figures: ReportFigures) -> list[str]:
    s = figures.settings
    lines = ["## Test Configuration", "", "### System Configuration"]
    lines.append(f"- **Worker Pool Concurrency:** {s.workers} workers ({s.worker_mode} mode, worker k starts "
                 f"k x {s.describe('stagger')} after the pool)")
    firsts = first_of_each(figures.results)
    backends = list(firsts) or list(figures.words.backends)
    timeout = f"{s.busy_timeout_ms}ms ({s.busy_timeout_ms / 1000:g} seconds)"
    for backend in backends:
        pragmas = firsts[backend].pragmas if backend in firsts else {}
        if backend == POSTGRESQL:  # the same setting is lock_timeout there
            lines.append(f"- **PostgreSQL Lock Timeout (lock_timeout):** {timeout}"
                         + (f"; read back from the server: {pragmas.get('lock_timeout_ms')}ms" if pragmas else ""))
        else:
            lines.append(f"- **SQLite Busy Timeout:** {timeout}"
                         + (f"; read back from SQLite: {pragmas.get('busy_timeout_ms')}ms" if pragmas else ""))
    lines.append(f"- **Retry Logic:** {s.retry_attempts} attempts with exponential backoff "
                 f"({s.describe('retry_backoff')} initial delay, doubled per retry)")
    lines.append(f"- **Queue Type:** goqite-backed persistent message queue (queue {s.queue_name!r}, visibility "
                 f"timeout {s.describe('visibility_timeout')}, max receive {s.max_receive}, poll interval "
                 f"{s.describe('poll_interval')})")
    lines += [f"- **Database:** {_database(backend, firsts.get(backend), s)}" for backend in backends]
    lines.append(f"- **Simulated Work per Job:** {s.describe('job_time')} (seed {s.seed}); "
                 f"{figures.words.begin(s.begin_immediate)}")
    if POSTGRESQL in firsts:
        lines.append(f"- **Queue Claim:** {claim_text(figures)}")
    disabled = sorted({f for run in figures.runs for f in (run.result.extra.get("disabled_fixes") or [])
                       if isinstance(f, str)})
    if disabled:
        lines.append(f"- **Fixes disabled:** {', '.join(disabled)} (--quaero-disable; the runs measured the queue "
                     "without them)")
    differing = [f"{run.label} ({', '.join(differences(run.result.settings, s))})" for run in figures.runs
                 if differences(run.result.settings, s)]
    if differing:
        lines.append(f"- **Per-run overrides:** {'; '.join(differing)}: in the verdict, but not compared with the "
                     "other runs (Scalability Analysis)")
    if figures.own:
        lines.append(f"- **Tests' own runs:** {plural(len(figures.own), 'run')} with a test's own settings or tree "
                     "(listed under Test Results): their tests judge them; the template's verdict, totals and "
                     "scaling leave them out")
    lines.append("")
    return lines


def _database(backend: str, first: RunResult | None, s: Any) -> str:
    """The database a backend's runs used, as its first run read it back."""
    pragmas = first.pragmas if first is not None else {}
    if backend == POSTGRESQL:
        if not pragmas:
            return "PostgreSQL (" + not_measured("no run read the server's settings back") + ")"
        return (f"PostgreSQL {pragmas.get('server_version', '?')}, {pragmas.get('isolation')} (read back: "
                f"lock_timeout={pragmas.get('lock_timeout_ms')}ms, statement_timeout="
                f"{pragmas.get('statement_timeout_ms')}ms, synchronous_commit={pragmas.get('synchronous_commit')})")
    if pragmas:
        journal = str(pragmas.get("journal_mode", "?"))
        mode = "WAL mode enabled" if journal.lower() == "wal" else f"journal_mode {journal} (WAL off)"
        return (f"SQLite {pragmas.get('sqlite_version', '?')} with {mode} (read back: journal_mode={journal}, "
                f"synchronous={pragmas.get('synchronous')}, cache {int(pragmas.get('cache_size_kib', 0)) // 1024}MB)")
    return (f"SQLite with WAL mode {'enabled' if s.wal else 'disabled'} (configured; "
            + not_measured("no run read the pragmas back") + ")")


def claim_text(figures: ReportFigures) -> str:
    """What the PostgreSQL runs' claim checks found: before its pool started, each run held one message of a
    queue of its own and called the queue's receive, which must take the free one without waiting."""
    found: list[tuple[str, Any]] = [(run.label, (run.result.extra.get("postgresql") or {}).get("claim_check"))
                                    for run in figures.runs if backend_of(run.result) == POSTGRESQL]
    checked = [(label, claim) for label, claim in found if isinstance(claim, dict)]
    wrong = [f"{label}: {_claim_outcome(claim)}" for label, claim in checked if not claim.get("ok")]
    if not checked:
        return "FOR UPDATE SKIP LOCKED expected; " + not_measured(
            "the workers were an external command, whose receive the plugin cannot call before the pool starts")
    shown = f"{len(checked)} of {len(found)} runs" if len(checked) < len(found) else plural(len(checked), "run")
    if wrong:
        return (f"{FAIL_ICON} checked before the pool started ({shown}), with one message held by another claim and "
                f"one free: {'; '.join(wrong)} (without FOR UPDATE SKIP LOCKED every worker queues behind the one "
                "claiming)")
    return (f"FOR UPDATE SKIP LOCKED confirmed: checked before the pool started ({shown}), with one message held by "
            "another claim and one free, the receive claimed the free message without waiting")


def _claim_outcome(claim: dict[str, Any]) -> str:
    if claim.get("waited"):
        return "the receive waited for the held message"
    if claim.get("error"):
        return f"the receive failed ({claim['error']})"
    return f"the receive claimed {claim.get('claimed')}"


def scenario_plan(figures: ReportFigures) -> list[str]:
    lines = ["### Test Scenarios"]
    for name in section_names(figures.groups):
        runs = figures.groups.get(name, [])
        if runs:
            parents, children = runs[0].result.parents, runs[0].result.children_per_parent
            state = "; ".join(f"{r.label}: {'PASS' if r.result.passed else 'FAIL'} "
                              f"({r.result.jobs_completed}/{r.result.total_jobs} completed)" for r in runs)
        else:  # only template scenarios go unrun, and they are built in
            parents, children = BUILTIN[name].parents, BUILTIN[name].children
            state = not_run(name)
        lines.append(f"- **{name.capitalize()} Load:** {parents} parent jobs \N{MULTIPLICATION SIGN} {children} "
                     f"child URLs each = {parents * children} total jobs ({state})")
    lines += ["", "---", ""]
    return lines


# ---------------------------------------------------------------- Test Results


def result_tables(figures: ReportFigures) -> list[str]:
    lines = ["## Test Results", ""]
    for name in section_names(figures.groups):
        runs = figures.groups.get(name, [])
        lines += [f"### {title(name, expected_jobs(name, runs))}", ""]
        if not runs:
            lines += [not_run(name) + ".", ""]
            continue
        for run in runs:
            if len(runs) > 1 or run.result.extra.get("origin"):
                origin = run.result.extra.get("origin")
                lines += [f"Run {run.result.run_id}" + (f" (from {origin})" if origin else "") + ":", ""]
            lines += [*criteria_table(criteria_rows(run.result)), ""]
    lines += _own_runs(figures)
    lines += ["---", ""]
    return lines


def _own_runs(figures: ReportFigures) -> list[str]:
    """Runs tests made with their own settings or tree: shown, but outside the template's verdict."""
    if not figures.own:
        return []
    lines = ["### Tests' Own Runs (not part of the template's verdict)", "",
             "Each run below was made by a test with settings or a tree of its own. The test that ran it judges it "
             "(a failing quaero_run() result fails that test only through the test's own asserts); the template's "
             "verdict, totals and scaling above leave it out.", ""]
    for result, why in figures.own:
        lines += [f"Run {result.run_id}, {result.scenario}: {result.parents} x {result.children_per_parent} = "
                  f"{result.total_jobs} jobs, {'PASS' if result.passed else 'FAIL'} ({why})", ""]
        lines += [*criteria_table(criteria_rows(result)), ""]
    return lines
