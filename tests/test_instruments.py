"""core.instruments on real SQLite files: hold and wait times, statement counts, busy errors seen at the source."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from pytest_quaero.core.instruments import (
    Instruments,
    instrumenting,
    last_busy_timeout_ms,
    operation,
    percentile,
)
from pytest_quaero.core.observed import ObservedConnection


def _open(path: Path, timeout_ms: int = 5000) -> sqlite3.Connection:
    conn = sqlite3.connect(path, factory=ObservedConnection, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")
    return conn


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "i.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = wal")
    conn.execute("create table t (x)")
    conn.close()
    return path


def test_hold_is_the_time_between_getting_the_lock_and_commit(db: Path) -> None:
    with instrumenting() as instruments:
        conn = _open(db)
        with operation("handler"):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("insert into t values (1)")
            time.sleep(0.05)
            conn.execute("COMMIT")
    hold = instruments.summary()["operations"]["handler"]["hold_ms"]
    assert 50 <= hold["max"] < 500, hold
    assert instruments.summary()["operations"]["handler"]["write_transactions"] == 1


def test_a_blocked_writer_waits_and_does_not_hold(db: Path) -> None:
    """The second writer's wait is the first one's hold; its own hold stays short."""
    with instrumenting() as instruments:
        first, second = _open(db), _open(db)
        got_lock = threading.Event()

        def hold_lock() -> None:
            with operation("slow"):
                first.execute("BEGIN IMMEDIATE")
                got_lock.set()
                time.sleep(0.1)
                first.execute("COMMIT")

        thread = threading.Thread(target=hold_lock)
        thread.start()
        got_lock.wait()
        with operation("blocked"):
            second.execute("BEGIN IMMEDIATE")
            second.execute("insert into t values (2)")
            second.execute("COMMIT")
        thread.join()
    summary = instruments.summary()["operations"]
    assert summary["blocked"]["wait_ms"]["max"] >= 50, summary["blocked"]
    assert summary["blocked"]["hold_ms"]["max"] < 50, summary["blocked"]
    assert summary["slow"]["hold_ms"]["max"] >= 100, summary["slow"]


def test_a_deferred_transaction_holds_from_its_first_write(db: Path) -> None:
    with instrumenting() as instruments:
        conn = _open(db)
        with operation("deferred"):
            conn.execute("BEGIN")
            conn.execute("select * from t")
            time.sleep(0.05)  # reading: no write lock yet
            conn.execute("insert into t values (3)")
            conn.execute("COMMIT")
    assert instruments.summary()["operations"]["deferred"]["hold_ms"]["max"] < 40


def test_statements_rows_and_rollbacks_are_counted(db: Path) -> None:
    with instrumenting() as instruments:
        conn = _open(db)
        with operation("work"):
            conn.execute("insert into t values (1)")
            conn.executemany("insert into t values (?)", [(2,), (3,)])
            conn.cursor().execute("update t set x = x + 1")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("delete from t")
            conn.rollback()
            conn.execute("select count(*) from t").fetchone()
    work = instruments.summary()["operations"]["work"]
    assert work["statements"] == {"begin": 1, "delete": 1, "insert": 2, "rollback": 1, "select": 1, "update": 1}
    assert work["rows_changed"] == 1 + 2 + 3 + 3  # the rolled-back delete still changed rows
    assert work["rollbacks"] == 1
    assert instruments.connections == 1


def test_a_busy_error_the_code_swallows_is_still_counted(db: Path) -> None:
    """A queue that catches "database is locked" and returns nothing hides it from the retry
    counters; the connection itself saw it, with the busy_timeout it really had."""
    with instrumenting() as instruments:
        holder, victim = _open(db), _open(db, timeout_ms=7)
        holder.execute("BEGIN IMMEDIATE")
        with operation("receive"), contextlib.suppress(sqlite3.OperationalError):  # the broken queue's swallow
            victim.execute("BEGIN IMMEDIATE")
        holder.execute("ROLLBACK")
        assert last_busy_timeout_ms() == 7
    receive = instruments.summary()["operations"]["receive"]
    assert receive["busy_errors"] == 1
    assert list(receive["busy_codes"]) in (["SQLITE_BUSY"], ["5"])


def test_connections_outside_instrumenting_cost_nothing(db: Path) -> None:
    conn = _open(db)
    conn.execute("insert into t values (1)")  # no active instruments: plain sqlite3
    with instrumenting() as instruments:
        # a connection reports to the instruments of the run it was opened in, never a later one
        conn.execute("insert into t values (2)")
    assert instruments.summary()["connections"] == 0
    assert instruments.summary()["total"]["statements"] == {}


def test_export_and_merge_add_up_across_processes(db: Path) -> None:
    with instrumenting() as one:
        conn = _open(db)
        with operation("op"):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("COMMIT")
    merged = Instruments()
    merged.merge(one.export())
    merged.merge(one.export())
    op = merged.summary()["operations"]["op"]
    assert op["write_transactions"] == 2 and op["hold_ms"]["samples"] == 2
    assert merged.connections == 2


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.95) == 0.0
    assert percentile([5.0], 0.5) == 5.0
    assert percentile([float(v) for v in range(1, 101)], 0.95) == 95.0
    assert percentile([float(v) for v in range(1, 101)], 0.5) == 50.0


# ---------------------------------------------------------------- a whole run, every connection


def _light_run(tmp_path: Path, worker_mode: str, handler: object = None) -> dict[str, object]:
    from pytest_quaero.core.run import run_scenario
    from pytest_quaero.core.scenarios import Scenario
    from pytest_quaero.core.settings import Settings

    settings = Settings().replace(source="test", worker_mode=worker_mode, job_time="5ms", stagger="20ms",
                                  poll_interval="20ms")
    result = run_scenario(Scenario("tiny", 2, 10, 60.0), settings, run_dir=tmp_path, handler=handler)  # type: ignore[arg-type]
    assert result.jobs_completed == 20
    locks: dict[str, object] = result.extra["locks"]
    return locks


@pytest.mark.parametrize("worker_mode", ["thread", "process"])
def test_a_run_measures_every_connection_in_both_worker_modes(tmp_path: Path, worker_mode: str) -> None:
    """Workers (in spawned processes too), producers and the monitor: every write transaction is seen."""
    locks = _light_run(tmp_path, worker_mode)
    ops = locks["operations"]  # type: ignore[index]
    # one receive and one delete statement per job; one transaction per child created and per finish
    assert ops["queue_receive"]["statements"]["update"] >= 20, ops
    assert ops["queue_delete"]["statements"]["delete"] == 20, ops
    assert ops["create_child"]["write_transactions"] == 20, ops
    assert ops["progress_update"]["write_transactions"] == 20, ops
    assert locks["total"]["hold_ms"]["max"] < 1000  # type: ignore[index]


class HoldsTheLockWhileWorking:
    """The classic regression: a handler that keeps a write transaction open while it works."""

    def __call__(self, job: object, context: object) -> None:
        from pytest_quaero.core import db

        conn = db.connect(context.db_path, context.settings)  # type: ignore[attr-defined]
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE crawl_jobs SET name = name WHERE id = ?", (job.job_id,))  # type: ignore[attr-defined]
            time.sleep(0.03)  # the work, inside the transaction
            conn.execute("COMMIT")
        finally:
            conn.close()


def test_a_handler_holding_the_lock_shows_as_handler_hold_time(tmp_path: Path) -> None:
    locks = _light_run(tmp_path, "thread", HoldsTheLockWhileWorking())
    handler = locks["operations"]["handler"]  # type: ignore[index]
    assert handler["write_transactions"] == 20
    assert handler["hold_ms"]["p50"] >= 30, handler
    # the queue's own operations stay short: the measure names who holds the lock
    assert locks["operations"]["progress_update"]["hold_ms"]["p50"] < 30  # type: ignore[index]


class SwallowingQueue:
    """A broken queue: its receive catches "database is locked" and returns nothing, so the worker
    just polls again and the retry counters never see the error. The first receive meets a real
    lock (another connection holds BEGIN IMMEDIATE, this one waits 0 ms)."""

    def __init__(self, inner: object, db_path: str, settings: object) -> None:
        from pytest_quaero.core import db

        self.inner = inner
        self.conn = db.connect(db_path, settings)  # type: ignore[arg-type]
        self.holder = db.connect(db_path, settings)  # type: ignore[arg-type]
        self.conn.execute("PRAGMA busy_timeout = 0")
        self.tripped = False

    def receive(self) -> object:
        if not self.tripped:
            self.tripped = True
            self.holder.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return None  # the bug: the busy error is swallowed
            finally:
                self.holder.execute("ROLLBACK")
        return self.inner.receive()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_busy_error_the_queue_swallows_fails_the_busy_criterion(tmp_path: Path) -> None:
    from pytest_quaero.core.criteria import evaluate, thresholds_for
    from pytest_quaero.core.run import run_scenario
    from pytest_quaero.core.scenarios import Scenario
    from pytest_quaero.core.settings import Settings
    from pytest_quaero.core.worker import Endpoint, open_endpoint

    def endpoint(db_path: str, settings: Settings) -> Endpoint:
        inner = open_endpoint(db_path, settings)
        queue = SwallowingQueue(inner.queue, db_path, settings)
        return Endpoint(queue=queue, store=inner.store, close=inner.close)

    settings = Settings().replace(source="test", workers=1, job_time="1ms", poll_interval="10ms")
    scenario = Scenario("tiny", 1, 5, 60.0)
    result = run_scenario(scenario, settings, run_dir=tmp_path, endpoint_factory=endpoint)
    assert result.jobs_completed == 5  # the queue still drains: only the lock error was hidden
    assert result.retry_totals.busy_events == 0  # the retries never saw it
    assert result.extra["hidden_busy"] == {"total": 1, "operations": {"queue_receive": 1}}
    verdict = next(v for v in evaluate(result, thresholds_for(scenario, {}, {})) if v.criterion == "sqlite_busy_errors")
    assert not verdict.passed and verdict.measured == "1"
    assert "caught by the code under test itself" in verdict.detail and "queue_receive x1" in verdict.detail
