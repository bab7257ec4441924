"""The reports of a PostgreSQL run say the server's things, parsed back from real runs.

The template speaks SQLite; on PostgreSQL every place it does (the busy timeout, SQLITE_BUSY,
the write lock, WAL, the journal, "a local SQLite file", the database version) must say what
the server did instead, with the values it read back (lock_timeout, the isolation level,
synchronous_commit, the claim check, the server's version). A SQLite session must keep the
template's words. Two sessions, each run once per test process and shared by the tests below:
a PostgreSQL light run, and a SQLite light run beside a marker's PostgreSQL run of 2 x 5 jobs.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

import pg_support
import pytest
from pg_support import needs_postgresql
from reportkit import FAST, section

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import criteria, run  # noqa: F401
from pytest_quaero.core.results_json import results_from
from pytest_quaero.core.settings import Settings
from pytest_quaero.report.markdown import ReportContext, render
from pytest_quaero.report.progress import format_final
from pytest_quaero.report.terminal import lock_line, scenario_heading
from pytest_quaero.report.wording import PG_LOCK_CODES, words_for

pytestmark = needs_postgresql
pg_server = pg_support.pg_server  # the shared fixture: in-process runs use this very server

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
#: timing criteria loosened so a busy shared machine cannot fail them; counting criteria stay strict
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
#: what only SQLite has, or what the template says in SQLite's words (worker "busy" time is the workers', not
#: the database's, and `busy_timeout_ms` is the TOML key --quaero-config reads on both backends)
SQLITE_ONLY = re.compile(r"SQLITE_BUSY|busy errors|busy events|Busy Errors|busy timeout|Busy Timeout|"
                         r"busy_timeout[ =]|SQLite's write lock|from BEGIN IMMEDIATE returning|journal_mode|"
                         r"\bWAL\b|local SQLite file|read back from SQLite|Nonems|SQLite \d")
MARKER_TEST = """
import pytest

@pytest.mark.quaero_scenario(parents=2, children=5, backend="postgresql", stagger="50ms", job_time="1ms")
def test_on_postgresql(quaero_run):
    assert quaero_run().passed
"""


@dataclass
class Session:
    """What one pytester session left behind: its terminal output, Markdown report and JSON document."""

    stdout: str
    markdown: str
    document: dict[str, Any]

    def results(self, backend: str) -> list[dict[str, Any]]:
        return [r for r in self.document["results"] if r["settings"]["backend"] == backend]


_SESSIONS: dict[str, Session] = {}


def _session(pytester: pytest.Pytester, name: str, *args: str) -> Session:
    """Run the session once per test process; later tests read what it left."""
    if name not in _SESSIONS:
        result = pytester.runpytest(*BASE, *RELAXED, *FAST, "--quaero-progress=plain", "--quaero-report=report.md",
                                    "--quaero-json=results.json", *args)
        assert result.ret == 0, result.stdout.str()
        _SESSIONS[name] = Session(result.stdout.str(), (pytester.path / "report.md").read_text(encoding="utf-8"),
                                  json.loads((pytester.path / "results.json").read_text(encoding="utf-8")))
    return _SESSIONS[name]


@pytest.fixture
def postgresql_session(pytester: pytest.Pytester, pg_server: Any) -> Session:
    return _session(pytester, "postgresql", "--quaero-backend=postgresql", "--quaero-scenario=light")


@pytest.fixture
def mixed_session(pytester: pytest.Pytester, pg_server: Any) -> Session:
    """A SQLite session whose one test runs PostgreSQL through its marker."""
    pytester.makepyfile(test_marker_backend=MARKER_TEST)
    return _session(pytester, "mixed", "--quaero-scenario=light")


def _sqlite_only(text: str) -> list[str]:
    return [line for line in text.splitlines() if SQLITE_ONLY.search(line)]


# ---------------------------------------------------------------- a PostgreSQL session


def test_the_markdown_report_of_a_postgresql_run_keeps_to_the_server(postgresql_session: Session) -> None:
    markdown = postgresql_session.markdown
    assert _sqlite_only(markdown) == []
    # SQLite by name only where the TOML names the section --quaero-config reads (it explains itself above it)
    assert [line for line in markdown.splitlines() if "sqlite" in line.lower()] == ["[storage.sqlite]"]
    assert "\n#### SQLITE_BUSY Error Analysis\n" not in markdown and "\n#### Lock Error Analysis\n" in markdown


def test_the_markdown_report_shows_what_the_server_read_back(postgresql_session: Session) -> None:
    markdown = postgresql_session.markdown
    (result,) = postgresql_session.results("postgresql")
    pragmas, info = result["pragmas"], result["extra"]["postgresql"]
    lock_timeout, isolation = pragmas["lock_timeout_ms"], pragmas["isolation"]
    version, durable = info["server_version"], pragmas["synchronous_commit"]
    config = section(markdown, "### System Configuration")
    assert (f"- **PostgreSQL Lock Timeout (lock_timeout):** 10000ms (10 seconds); read back from the server: "
            f"{lock_timeout}ms") in config.splitlines()
    assert f"- **Database:** PostgreSQL {version}, {isolation} (read back: lock_timeout={lock_timeout}ms" in config
    assert info["claim_check"]["ok"]
    assert ("- **Queue Claim:** FOR UPDATE SKIP LOCKED confirmed: checked before the pool started (1 run), with one "
            "message held by another claim and one free, the receive claimed the free message without waiting"
            ) in config.splitlines()
    assert f", PostgreSQL {version}, pytest-quaero " in markdown  # the environment line, twice
    assert f"**Database Version:** PostgreSQL {version} (embedded server, started for this session)" in markdown
    # each connection configuration in the server's terms, as many connections as the run counted
    locks = section(markdown, "#### Write Lock Hold and Wait")
    assert "from its first statement that locks an existing row" in locks
    assert "| Lock Errors Seen |" in locks
    configurations = re.findall(r"^- lock_timeout (\d+)ms, isolation ([A-Z ]+), (synchronous_commit=\w+): (\d+) "
                                r"connections, opened by ", locks, re.M)
    assert {(int(t), i, s) for t, i, s, _ in configurations} >= {(lock_timeout, isolation,
                                                                 f"synchronous_commit={durable}")}
    assert sum(int(n) for *_, n in configurations) == result["extra"]["connections"]["opened"]
    # the readiness claims and alerts by SQLSTATE, with this session's count
    busy = result["metrics"]["busy_errors"]
    assert f"- \N{WHITE HEAVY CHECK MARK} Zero lock errors ({PG_LOCK_CODES}) across all test scenarios: {busy} " \
        f"(light {busy})" in markdown
    assert re.search(rf"^  - Lock error rate > 0 per hour +\(this session: {busy} in ", markdown, re.M)
    checklist = section(markdown, "### Deployment Checklist")
    assert f"- [ ] Set appropriate lock timeout (10000ms recommended) (this run read back lock_timeout=" \
        f"{lock_timeout}ms)" in checklist.splitlines()
    assert f"(this run read back synchronous_commit={durable}" in checklist
    assert f"- [ ] Claim queue messages with FOR UPDATE SKIP LOCKED (isolation {isolation} read back; " in checklist


def test_the_terminal_says_lock_errors_and_row_locks_on_postgresql(postgresql_session: Session) -> None:
    stdout = postgresql_session.stdout
    assert _sqlite_only(stdout) == []
    assert "write lock:" not in stdout
    busy = postgresql_session.results("postgresql")[0]["metrics"]["busy_errors"]
    assert re.search(rf"^quaero\[light\] 5 x 20 = 100 jobs, .*: PASS \(100/100 jobs in [\d.]+s, [\d.]+ jobs/s, "
                     rf"{busy} lock errors\)$", stdout, re.M), stdout
    assert re.search(rf"done: 100/100 jobs in [\d.]+s, [\d.]+ jobs/s, 0 messages left, {busy} lock errors: PASS",
                     stdout), stdout  # the progress display's last line
    assert re.search(r"^  row locks: held p50 [\d.]+ms, p95 [\d.]+ms, max [\d.]+ms over \d+ transactions", stdout,
                     re.M), stdout


# ---------------------------------------------------------------- a SQLite session with a marker's PostgreSQL run


def test_a_sqlite_session_keeps_the_templates_words(mixed_session: Session) -> None:
    markdown = mixed_session.markdown
    (sqlite,) = mixed_session.results("sqlite")
    pragmas = sqlite["pragmas"]
    assert f"- **SQLite Busy Timeout:** 10000ms (10 seconds); read back from SQLite: {pragmas['busy_timeout_ms']}ms" \
        in markdown.splitlines()
    assert "\n#### SQLITE_BUSY Error Analysis\n" in markdown
    assert re.search(r"^- \*\*Simulated Work per Job:\*\* 1ms \(seed 0\); BEGIN IMMEDIATE on$", markdown, re.M)
    assert re.search(r"^- \S+ Zero SQLITE_BUSY errors across all test scenarios: \d+ \(light \d+\)$", markdown, re.M)
    assert re.search(r"^2\. \*\*Database Monitoring:\*\* Track SQLITE_BUSY error rate \(should remain at 0; ", markdown,
                     re.M)
    assert re.search(r"^  - SQLITE_BUSY error rate > 0 per hour +\(this session: ", markdown, re.M)
    lines = markdown.splitlines()
    assert ("3. **Network Failure Simulation:** Tests with intermittent connectivity (not covered: the queue is a "
            "local SQLite file)") in lines
    assert ("- [ ] Enable WAL mode in SQLite configuration (this run read back journal_mode="
            f"{pragmas['journal_mode']})") in lines
    assert f"- [ ] Set appropriate busy timeout (10000ms recommended) (this run read back busy_timeout=" \
        f"{pragmas['busy_timeout_ms']}ms)" in markdown.splitlines()
    assert f"**Database Version:** SQLite {sqlite['sqlite_version']}\\" in markdown.splitlines()
    assert re.search(r"^- busy_timeout \d+ms, journal_mode wal, synchronous \w+: \d+ connections", markdown, re.M)
    assert "PostgreSQL" not in section(markdown, "## Recommendations")  # the marker's run is the test's own
    # the marker's PostgreSQL run, listed as the test's own, under the server's criterion name
    own = section(markdown, "### Tests' Own Runs (not part of the template's verdict)")
    assert "backend postgresql (session sqlite)" in own and "| **Lock Errors** | 0 | = 0 |" in own


def test_each_run_of_a_mixed_session_has_its_backends_words(mixed_session: Session) -> None:
    stdout = mixed_session.stdout
    assert re.search(r"^quaero\[light\] 5 x 20 = 100 jobs, .*: PASS \(.*, \d+ busy errors\)$", stdout, re.M), stdout
    assert re.search(r"^  write lock: held p50 ", stdout, re.M), stdout
    sqlite, postgresql = (results_from({**mixed_session.document, "results": mixed_session.results(backend)})[0]
                          for backend in ("sqlite", "postgresql"))
    assert f", {postgresql.busy_errors} lock errors) [returned to " in scenario_heading(postgresql)
    assert re.search(rf"^quaero\[custom\] 2 x 5 = 10 jobs, .*, {postgresql.busy_errors} lock errors\) \[returned to ",
                     stdout, re.M), stdout
    assert format_final(postgresql).endswith(f", {postgresql.busy_errors} lock errors: PASS")
    assert lock_line(postgresql).startswith("  row locks: held p50 ")
    assert format_final(sqlite).endswith(f", {sqlite.busy_errors} busy errors: PASS")
    # both in the template's verdict (a session that ran both backends on equal terms): each named
    both = [sqlite, dataclasses.replace(postgresql, extra={k: v for k, v in postgresql.extra.items() if k != "origin"},
                                        settings={**postgresql.settings, "backend": "postgresql"})]
    assert words_for(both).name == "SQLite and PostgreSQL"
    markdown = render(ReportContext(both, Settings(), versions=mixed_session.document["versions"]))
    config = section(markdown, "### System Configuration")
    assert "- **SQLite Busy Timeout:** 10000ms (10 seconds); read back from SQLite: " in config
    assert "- **PostgreSQL Lock Timeout (lock_timeout):** 10000ms (10 seconds); read back from the server: " in config
    assert len(re.findall(r"^- \*\*Database:\*\* (SQLite|PostgreSQL) ", config, re.M)) == 2
    assert "\n#### Lock Error Analysis (SQLITE_BUSY on SQLite, SQLSTATE on PostgreSQL)\n" in markdown
    assert "SQLite raised" not in markdown and "SQLite and PostgreSQL raised " in markdown
    checklist = section(markdown, "### Deployment Checklist")
    assert "Enable WAL mode in SQLite configuration" in checklist and "Set appropriate lock timeout" in checklist
    assert re.search(r"^\*\*Database Version:\*\* SQLite [\d.]+; PostgreSQL [\d.]+ \(embedded server", markdown, re.M)
