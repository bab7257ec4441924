"""Appendix and footer: log excerpts, the integrity queries with their results, each run's timeline."""

from __future__ import annotations

import os

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.report.figures import ReportFigures, Run, expected_jobs, find_query, section_names
from pytest_quaero.report.sections.summary import environment, server_version
from pytest_quaero.report.wording import (
    FAIL_ICON,
    PASS_ICON,
    POSTGRESQL,
    SQLITE,
    backend_of,
    duration,
    hard_breaks,
    mark,
    names,
    not_measured,
    not_run,
    offset,
    pool_runtime,
    title,
)

__all__ = ["execution_timeline", "footer", "query_results", "retry_excerpt", "stagger_excerpt"]

#: a query result shows at most this many rows
_MAX_SQL_ROWS = 20
_NO_LOG = "no scenario ran, so there is no log (--quaero-scenario)"
# (heading in the report, title of the query the run recorded)
_QUERIES = (("Queue Statistics Query", "Queue Statistics Query"),
            ("Job Hierarchy Validation Query", "Job Hierarchy Validation Query"),
            ("Parent Progress Query", "Parent progress against child statuses"))


def retry_excerpt(figures: ReportFigures) -> list[str]:
    """A retry that succeeded, as the template shows; else whatever retry the log holds."""
    lines = ["## Appendix", "", "### Sample Log Excerpts", "", "#### Successful Retry Operation"]
    with_retry = [(run, run.result.log_excerpts) for run in figures.runs if run.result.log_excerpts.get("retry")]
    retry = next((pair for pair in with_retry if pair[1].get("retry_outcome") == "succeeded"), None) or next(
        iter(with_retry), None)
    if retry is not None:
        run, excerpts = retry
        outcome = excerpts.get("retry_outcome") or "unfinished"
        lines.append(f"From {run.label} (run {run.result.run_id}); the operation {outcome}"
                     + ("." if outcome == "succeeded" else ": no retry in this session succeeded."))
        lines += ["```", *excerpts["retry"], "```"]
    elif not figures.results:
        lines.append(not_measured(_NO_LOG))
    else:
        lines.append(f"None happened: no operation met a lock error in this session ({figures.totals.busy} "
                     f"{figures.words.events}), so the log holds no retry to show. More contention (e.g. "
                     "--quaero-workers=8 or --quaero-compare-fixes) produces retries.")
    lines.append("")
    return lines


def stagger_excerpt(figures: ReportFigures) -> list[str]:
    """The first run's logged worker starts."""
    lines = ["#### Worker Staggering Verification"]
    for run in figures.runs:
        logged = run.result.log_excerpts.get("stagger") or []
        if logged:
            lines += [f"From {run.label} (run {run.result.run_id}):", "```", *logged, "```", ""]
            return lines
    lines += [not_measured("no run logged its worker starts" if figures.results else _NO_LOG), ""]
    return lines


def query_results(figures: ReportFigures) -> list[str]:
    """Each query's SQL (from the first run that recorded it) and every run's result."""
    lines = ["### Database Query Results", ""]
    for heading, query_title in _QUERIES:
        lines += [f"#### {heading}", "```sql"]
        query = next((q for run in figures.runs if (q := find_query(run.result, query_title)) is not None), None)
        if query is None:
            lines.append("-- " + not_measured("no scenario ran, so no query was run (--quaero-scenario)"))
        else:
            lines += query["sql"].rstrip(";").splitlines()
            lines[-1] += ";"
            for run in figures.runs:
                lines += ["", *_query_result(run, query_title)]
        lines += ["```", ""]
    return lines


def _query_result(run: Run, query_title: str) -> list[str]:
    r = run.result
    query = find_query(r, query_title)
    params = (f"run = '{r.run_id}-*', queue = '{r.settings.get('queue_name')}', "
              f"max_receive = {r.settings.get('max_receive')}")
    if query is None:
        return [f"Result ({run.label}): " + not_measured("this run recorded no such query")]
    rows = query["rows"]
    lines = [f"Result ({run.label}; parameters {params}):"]
    if query_title == "Queue Statistics Query":
        if not rows:
            lines.append(f"no rows: the goqite table holds no message of queue {r.settings.get('queue_name')!r} "
                         f"{PASS_ICON} All messages processed ({r.messages_enqueued} were enqueued in this run)")
        for row in rows:
            pending, dead = int(row[1]), int(row[2])
            lines += [f"queue_name: {row[0]}",
                      f"pending_messages: {pending}  {mark(pending == 0)} "
                      + ("All messages processed" if pending == 0 else "messages left in the queue"),
                      f"dead_messages: {dead}  {mark(dead == 0)}",
                      f"messages enqueued in this run: {r.messages_enqueued}"]
        return lines
    if query_title == "Job Hierarchy Validation Query":
        lines.append("parent_id | parent_name | child_count")
        lines += _sql_rows(rows)
        wrong = [row for row in rows if int(row[2]) != r.children_per_parent]
        if rows and not wrong and len(rows) == r.parents:
            lines.append(f"All {r.parents} parents have the expected {r.children_per_parent} children {PASS_ICON}")
        else:
            lines.append(f"{len(wrong)} of {len(rows)} parents lack the expected {r.children_per_parent} children; "
                         f"{r.parents - len(rows)} parents missing {FAIL_ICON}")
        return lines
    lines.append("id | status | total | completed | failed | pending | children_completed | children_failed | children")
    lines += _sql_rows(rows)
    mismatches = len(r.integrity.get("progress_mismatches", []))
    lines.append(f"{mismatches} parents whose counters disagree with their children {mark(mismatches == 0)}")
    return lines


def _sql_rows(rows: list[list[object]]) -> list[str]:
    lines = [" | ".join(str(c) for c in row) for row in rows[:_MAX_SQL_ROWS]]
    if len(rows) > _MAX_SQL_ROWS:
        lines.append(f"... {len(rows) - _MAX_SQL_ROWS} more rows")
    return lines


def execution_timeline(figures: ReportFigures) -> list[str]:
    """Each run's own timeline, offsets from its start."""
    lines = ["### Test Execution Timeline", ""]
    for name in section_names(figures.groups):
        runs = figures.groups.get(name, [])
        lines += [f"#### {title(name, expected_jobs(name, runs), lower=True)}", "```"]
        if not runs:
            lines.append(not_run(name))
        for i, run in enumerate(runs):
            if len(runs) > 1:
                lines.append(("" if i == 0 else "\n") + f"run {run.result.run_id}:")
            lines += [f"{offset(float(entry['offset']))} {entry['label']}" for entry in run.result.timeline]
        lines += ["```", ""]
    lines += ["---", ""]
    return lines


def footer(figures: ReportFigures) -> list[str]:
    """Who ran the test, where, on which versions, for how long, and the verdict."""
    results, v = figures.results, figures.ctx.versions
    conducted = f"pytest-quaero {v.get('plugin', '?')} (pytest {v.get('pytest', '?')})"
    if os.environ.get("GITHUB_ACTIONS") == "true":
        conducted += (f" in GitHub Actions, {os.environ.get('GITHUB_REPOSITORY', '?')} run "
                      f"{os.environ.get('GITHUB_RUN_ID', '?')}")
    database = _database_versions(figures)
    python = ", ".join(sorted({r.python_version for r in results if r.python_version})) or v.get("python", "?")
    runtime = _worker_runtime(results, python)
    took = f"{duration(sum(r.total_duration for r in results))} of load runs" if results else \
        not_measured("no scenario ran")
    if figures.ctx.session_duration is not None:
        took += f" in a {duration(figures.ctx.session_duration)} pytest session"
    verdict = ("PASS" if figures.overall_passed else "FAIL") if results else \
        not_measured("no scenario ran (--quaero-scenario)")
    return hard_breaks([f"**Test Conducted By:** {conducted}", f"**Environment:** {environment(figures)}",
                        f"**Database Version:** {database}", f"**Go Version:** {runtime}",
                        f"**Test Duration:** {took}", f"**Status:** {verdict}"])


def _database_versions(figures: ReportFigures) -> str:
    """``SQLite 3.45.1``; on PostgreSQL the server's version and where it ran; both in a session that ran both."""
    results, v = figures.results, figures.ctx.versions
    if not results:
        return (f"SQLite {v.get('sqlite', '?')}" if figures.words.sqlite else figures.words.name) + \
            " (" + not_measured("no run") + ")"
    parts: list[str] = []
    sqlite = sorted({r.sqlite_version for r in results if backend_of(r) == SQLITE and r.sqlite_version})
    if sqlite:
        parts.append("SQLite " + ", ".join(sqlite))
    servers = sorted({(server_version(r), bool((r.extra.get("postgresql") or {}).get("embedded")))
                      for r in results if backend_of(r) == POSTGRESQL})
    parts += [f"PostgreSQL {version} ("
              + ("embedded server, started for this session" if embedded else "a server reached through the DSN") + ")"
              for version, embedded in servers]
    return "; ".join(parts) or f"SQLite {v.get('sqlite', '?')} (" + not_measured("no run") + ")"


def _worker_runtime(results: list[RunResult], python: str) -> str:
    """The template's Go Version: the Go runtime an external pool named in its hello, else what ran the workers."""
    pools = [p for r in results if isinstance(p := r.extra.get("pool"), dict)]
    hellos = [p["hello"] for p in pools if isinstance(p.get("hello"), dict)]
    go = sorted({pool_runtime(h) for h in hellos if str(h.get("language", "")).lower() == "go"})
    others = sorted({pool_runtime(h) for h in hellos if str(h.get("language", "")).lower() != "go"})
    builtin = len(pools) < len(results) or any(int((p.get("workers") or {}).get("builtin") or 0) for p in pools)
    also = [*others, *([f"Python {python}"] if builtin else [])]
    if go:
        return ", ".join(go) + (f" (the external workers' runtime, from their hello; also {names(also)})"
                                if also else " (the external workers' runtime, from their hello)")
    if not results:
        return not_measured("no scenario ran, so no worker ran")
    return f"not applicable: the workers ran on {names(also or [f'Python {python}'])}"

