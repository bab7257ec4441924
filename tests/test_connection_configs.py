"""Every connection the run's code opens is observed with its own pragmas; fast busy uses the raiser's timeout."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import extension, items, plugin  # noqa: F401
from pytest_quaero.core import harness, run  # noqa: F401
from pytest_quaero.core.observed import observing
from pytest_quaero.core.retry import Retrier

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
FAST = ("--quaero-job-time=1ms", "--quaero-stagger=50ms", "--quaero-poll-interval=20ms",
        "--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")

HANDLER = """
import sqlite3

from pytest_quaero.core.scenarios import Scenario


def pytest_quaero_scenarios():
    return [Scenario("tiny", parents=2, children=5, time_limit=60.0)]


def pytest_quaero_handle_job(job, context):
    # the code under test's own connection: plain sqlite3, its own busy timeout and synchronous
    conn = sqlite3.connect(context.db_path, timeout=2.5)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("create table if not exists pages (job text)")
    conn.execute("insert into pages values (?)", (job.job_id,))
    conn.commit()
    conn.close()
    return True
"""


def test_a_handlers_own_connection_is_listed_with_its_own_busy_timeout(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(textwrap.dedent(HANDLER))
    result = pytester.runpytest(*BASE, *FAST, "--quaero-scenario=tiny", "--quaero-report=report.md")
    result.assert_outcomes(passed=10)
    report = (pytester.path / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("- busy_timeout ")]
    # one connection per job, opened by the conftest, with what it set itself, read back
    assert "- busy_timeout 2500ms, journal_mode wal, synchronous OFF: 10 connections, opened by conftest 10" in rows, \
        rows
    # the plugin's own connections keep the run's settings, on a line of their own
    assert any(row.startswith("- busy_timeout 10000ms, journal_mode wal, synchronous NORMAL: ") and "plugin" in row
               for row in rows), rows
    assert "Connections by configuration (" in report


def _held(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_busy_error_is_fast_against_the_raising_connections_own_timeout(tmp_path: Path) -> None:
    path = tmp_path / "fast.db"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode = wal")
    setup.execute("create table t (x)")
    setup.close()
    # The run's setting says 10 s; the library's connection waits 200ms and gives up after it.
    # Against 10 s that is "fast" (a lock-upgrade bug); against its own 200ms it is plain contention.
    holder = _held(path)
    try:
        with observing():
            library = sqlite3.connect(path, timeout=0.2, isolation_level=None)
            retrier = Retrier(1, 0.001, busy_timeout_ms=10_000)
            with pytest.raises(sqlite3.OperationalError):
                retrier.call("op", lambda: library.execute("insert into t values (1)"))
            library.close()
    finally:
        holder.close()
    stats = retrier.stats["op"]
    assert (stats.busy_events, stats.fast_busy) == (1, 0)
    # a deferred read-then-write after another writer committed fails at once, whatever the timeout
    with observing():
        reader = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("select count(*) from t").fetchone()
        writer = sqlite3.connect(path, isolation_level=None)
        writer.execute("insert into t values (2)")
        writer.close()
        snapshot = Retrier(1, 0.001, busy_timeout_ms=10)
        with pytest.raises(sqlite3.OperationalError):
            snapshot.call("op", lambda: reader.execute("insert into t values (3)"))
        reader.close()
    assert (snapshot.stats["op"].busy_events, snapshot.stats["op"].fast_busy) == (1, 1)


ORM_QUEUE = """
import sqlite3

from pytest_quaero import Queue
from pytest_quaero.core.scenarios import Scenario


class OperationalError(Exception):
    # an ORM's own error type (SQLAlchemy's shape): the driver's error as .orig, no sqlite3.Error
    def __init__(self, orig):
        super().__init__(f"(sqlite3.OperationalError) {orig}")
        self.orig = orig


def pytest_quaero_scenarios():
    return [Scenario("tiny", parents=2, children=5, time_limit=60.0)]


class OrmQueue(Queue):
    met_a_lock = False

    def receive(self):
        try:
            if not self.met_a_lock:  # once per worker: another writer holds the lock right now
                self.met_a_lock = True
                other = sqlite3.connect(self.path, isolation_level=None)
                other.execute("BEGIN IMMEDIATE")
                try:
                    self.conn.execute("PRAGMA busy_timeout = 0")  # the ORM's own connection setup
                    self.conn.execute("update goqite set received = received where 0")
                finally:
                    other.close()
            return super().receive()
        except sqlite3.OperationalError as exc:
            raise OperationalError(exc) from None


def pytest_quaero_make_queue(settings, db_path, connection):
    queue = OrmQueue(connection(), settings.queue_name, visibility_timeout=settings.visibility_timeout,
                     max_receive=settings.max_receive)
    queue.path = db_path
    return queue
"""


def test_an_orm_wrapped_busy_error_is_a_busy_error_not_a_pass(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(textwrap.dedent(ORM_QUEUE))
    result = pytester.runpytest(*BASE, *FAST, "--quaero-scenario=tiny", "-rA")
    # each worker met the lock once, through the ORM's exception: retried, counted, no worker lost
    result.assert_outcomes(passed=9, failed=1)
    line = next(line for line in result.outlines if line.startswith("  SQLITE_BUSY Errors"))
    # at least one per worker (its busy_timeout=0 then meets the others' writes too)
    assert int(line.split()[2]) >= 2 and line.rstrip().endswith("FAIL"), line
    result.stdout.fnmatch_lines(["PASSED quaero[[]tiny[]]::completion_rate*",
                                 "PASSED quaero[[]tiny[]]::worker_health*"])
