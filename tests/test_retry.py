"""Retry: lock errors provoked for real on a file, classified by code, retried with backoff, counted."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_quaero.core.retry import OpStats, Retrier, classify, merge_stats, transaction


def _open(path: Path, busy_timeout_ms: int = 0, **kwargs: object) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=busy_timeout_ms / 1000, **kwargs)  # type: ignore[arg-type]
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    return conn


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "retry.db"
    conn = _open(path)
    conn.execute("PRAGMA journal_mode = wal").fetchall()
    conn.execute("create table t (id integer primary key, v text not null)")
    conn.execute("insert into t (id, v) values (1, 'one')")
    conn.close()
    return path


@pytest.fixture
def holder(db_file: Path) -> Iterator[sqlite3.Connection]:
    """A connection holding the write lock (BEGIN IMMEDIATE) until the test releases it."""
    conn = _open(db_file)
    conn.execute("BEGIN IMMEDIATE")
    yield conn
    if conn.in_transaction:
        conn.rollback()
    conn.close()


@pytest.fixture
def writer(db_file: Path) -> Iterator[sqlite3.Connection]:
    conn = _open(db_file, busy_timeout_ms=0)
    yield conn
    if conn.in_transaction:
        conn.rollback()
    conn.close()


def _busy_error(writer: sqlite3.Connection) -> sqlite3.Error:
    with pytest.raises(sqlite3.OperationalError) as info:
        writer.execute("BEGIN IMMEDIATE")
    return info.value


def _snapshot_error(db_file: Path) -> sqlite3.Error:
    """A deferred read-then-write after another connection committed: SQLITE_BUSY_SNAPSHOT."""
    reader = _open(db_file, busy_timeout_ms=5000)
    other = _open(db_file, busy_timeout_ms=5000)
    try:
        reader.execute("BEGIN")
        reader.execute("select v from t where id = 1").fetchall()
        other.execute("update t set v = 'changed' where id = 1")
        with pytest.raises(sqlite3.OperationalError) as info:
            reader.execute("update t set v = 'mine' where id = 1")
        reader.rollback()
        return info.value
    finally:
        reader.close()
        other.close()


# ---------------------------------------------------------------- classify, on real errors


def test_busy_from_a_lock_holder(holder: sqlite3.Connection, writer: sqlite3.Connection) -> None:
    exc = _busy_error(writer)
    assert exc.sqlite_errorcode == 5  # type: ignore[attr-defined]
    assert classify(exc) == "SQLITE_BUSY"


def test_busy_snapshot_from_a_deferred_read_then_write(db_file: Path) -> None:
    exc = _snapshot_error(db_file)
    assert exc.sqlite_errorcode == 517  # type: ignore[attr-defined]
    assert classify(exc) == "SQLITE_BUSY_SNAPSHOT"


def test_locked_from_dropping_a_table_being_read(db_file: Path) -> None:
    conn = _open(db_file)
    conn.execute("insert into t (v) values ('two'), ('three')")
    cursor = conn.execute("select * from t")
    cursor.fetchone()
    with pytest.raises(sqlite3.OperationalError) as info:
        conn.execute("drop table t")
    cursor.fetchall()
    conn.close()
    assert info.value.sqlite_errorcode == 6  # type: ignore[attr-defined]
    assert classify(info.value) == "SQLITE_LOCKED"


def test_locked_sharedcache(db_file: Path) -> None:
    uri = f"file:{db_file}?cache=shared"
    first = sqlite3.connect(uri, uri=True, isolation_level=None)
    second = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        first.execute("BEGIN IMMEDIATE")
        first.execute("insert into t (v) values ('x')")
        with pytest.raises(sqlite3.OperationalError) as info:
            second.execute("select * from t").fetchall()
        first.rollback()
    finally:
        first.close()
        second.close()
    assert info.value.sqlite_errorcode == 262  # type: ignore[attr-defined]
    assert classify(info.value) == "SQLITE_LOCKED_SHAREDCACHE"


def test_integrity_error_is_not_a_lock_error(db_file: Path) -> None:
    conn = _open(db_file)
    with pytest.raises(sqlite3.IntegrityError) as info:
        conn.execute("insert into t (id, v) values (1, 'dup')")
    conn.close()
    assert info.value.sqlite_errorcode & 0xFF == 19  # type: ignore[attr-defined]
    assert classify(info.value) is None


@pytest.mark.parametrize(
    "sql",
    ["selec 1", "select * from no_such_table", "insert into t (id, v) values (2, null)"],
)
def test_other_sqlite_errors_are_not_lock_errors(db_file: Path, sql: str) -> None:
    conn = _open(db_file)
    with pytest.raises(sqlite3.Error) as info:
        conn.execute(sql)
    conn.close()
    assert classify(info.value) is None


def test_non_sqlite_errors_are_not_lock_errors() -> None:
    assert classify(ValueError("database is locked")) is None
    assert classify(TimeoutError()) is None


def test_message_fallback_without_an_error_code() -> None:
    """Python 3.10 has no sqlite_errorcode: SQLite's fixed messages decide."""
    assert classify(sqlite3.OperationalError("database is locked")) == "SQLITE_BUSY"
    assert classify(sqlite3.OperationalError("database table is locked: t")) == "SQLITE_LOCKED"
    assert classify(sqlite3.OperationalError("database schema is locked: main")) == "SQLITE_LOCKED"
    assert classify(sqlite3.OperationalError("no such table: database is locked")) is None


@pytest.mark.parametrize(
    ("code", "name"),
    [(5, "SQLITE_BUSY"), (261, "SQLITE_BUSY_RECOVERY"), (517, "SQLITE_BUSY_SNAPSHOT"), (773, "SQLITE_BUSY_TIMEOUT"),
     (6, "SQLITE_LOCKED"), (262, "SQLITE_LOCKED_SHAREDCACHE"), (518, "SQLITE_LOCKED_VTAB"),
     (1, None), (19, None), (1555, None), (10, None), (266, None), (13, None)],
)
def test_extended_codes_by_number(code: int, name: str | None) -> None:
    """Codes that cannot be provoked on demand (recovery, vtab): same rule, by low byte."""
    exc = sqlite3.OperationalError("x")
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    assert classify(exc) == name


# ---------------------------------------------------------------- Retrier


def test_backoff_doubles_from_the_setting_and_counts(holder: sqlite3.Connection, writer: sqlite3.Connection) -> None:
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 4:
            holder.rollback()  # the lock holder lets go before the fifth (last) attempt

    def write() -> int:
        with transaction(writer):
            writer.execute("insert into t (v) values ('retried')")
        return 42

    retrier = Retrier(5, 0.1, busy_timeout_ms=10_000, sleep=sleep)
    assert retrier.call("save_job", write, "job-1") == 42
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8])
    stats = retrier.stats["save_job"]
    assert stats.operations == 1
    assert stats.attempts == 5
    assert stats.busy_events == 4
    assert stats.retried_operations == 1
    assert stats.successful_retries == 1
    assert stats.exhausted == 0
    assert stats.other_errors == 0
    assert stats.codes == {"SQLITE_BUSY": 4}
    # busy_timeout is 0 on the writer, so each error came back far sooner than the 10s setting says
    assert stats.fast_busy == 4
    assert writer.execute("select count(*) from t where v = 'retried'").fetchone()[0] == 1


def test_exhausted_raises_the_lock_error(holder: sqlite3.Connection, writer: sqlite3.Connection) -> None:
    delays: list[float] = []
    retrier = Retrier(3, 0.05, sleep=delays.append)
    with pytest.raises(sqlite3.OperationalError) as info:
        retrier.call("queue_delete", lambda: writer.execute("BEGIN IMMEDIATE"))
    assert classify(info.value) == "SQLITE_BUSY"
    assert delays == pytest.approx([0.05, 0.1])
    stats = retrier.stats["queue_delete"]
    assert (stats.attempts, stats.busy_events, stats.retried_operations) == (3, 3, 1)
    assert (stats.successful_retries, stats.exhausted) == (0, 1)
    assert not writer.in_transaction


def test_one_attempt_never_sleeps(holder: sqlite3.Connection, writer: sqlite3.Connection) -> None:
    delays: list[float] = []
    retrier = Retrier(1, 0.1, sleep=delays.append)
    with pytest.raises(sqlite3.OperationalError):
        retrier.call("send", lambda: writer.execute("BEGIN IMMEDIATE"))
    assert delays == []
    assert retrier.stats["send"].exhausted == 1
    assert retrier.stats["send"].retried_operations == 0  # nothing was retried


def test_busy_after_waiting_out_busy_timeout_is_not_fast(holder: sqlite3.Connection, db_file: Path) -> None:
    waiting = _open(db_file, busy_timeout_ms=150)
    try:
        retrier = Retrier(1, 0.0, busy_timeout_ms=150, sleep=lambda s: None)
        with pytest.raises(sqlite3.OperationalError):
            retrier.call("save_job", lambda: waiting.execute("BEGIN IMMEDIATE"))
    finally:
        waiting.close()
    stats = retrier.stats["save_job"]
    assert stats.busy_events == 1
    assert stats.fast_busy == 0
    assert stats.busy_wait_seconds >= 0.1


@pytest.mark.parametrize("sql", ["insert into t (id, v) values (1, 'dup')", "selec 1"])
def test_non_lock_errors_are_never_retried(db_file: Path, sql: str) -> None:
    conn = _open(db_file)
    delays: list[float] = []
    retrier = Retrier(5, 0.1, sleep=delays.append)
    calls = []

    def fn() -> None:
        calls.append(1)
        conn.execute(sql)

    with pytest.raises(sqlite3.Error):
        retrier.call("save_job", fn)
    conn.close()
    assert len(calls) == 1
    assert delays == []
    stats = retrier.stats["save_job"]
    assert (stats.attempts, stats.busy_events, stats.other_errors, stats.exhausted) == (1, 0, 1, 0)


def test_python_errors_pass_through_uncounted_as_busy() -> None:
    retrier = Retrier(5, 0.1, sleep=lambda s: pytest.fail("must not sleep"))
    with pytest.raises(KeyError):
        retrier.call("save_job", lambda: {}["x"])
    assert retrier.stats["save_job"].busy_events == 0


def test_busy_snapshot_is_cured_by_restarting_the_whole_transaction(db_file: Path) -> None:
    """The retried unit is the caller's function, so a snapshot error re-reads from the top."""
    conn = _open(db_file, busy_timeout_ms=5000)
    other = _open(db_file, busy_timeout_ms=5000)
    attempts = []

    def read_then_write() -> str:
        with transaction(conn, immediate=False):
            value = conn.execute("select v from t where id = 1").fetchone()[0]
            if not attempts:
                other.execute("update t set v = 'other' where id = 1")  # a commit between read and write
            attempts.append(value)
            conn.execute("update t set v = ? where id = 1", (value + "+mine",))
        return value

    retrier = Retrier(3, 0.0, sleep=lambda s: None)
    assert retrier.call("progress_update", read_then_write) == "other"
    assert attempts == ["one", "other"]
    assert conn.execute("select v from t where id = 1").fetchone()[0] == "other+mine"
    stats = retrier.stats["progress_update"]
    assert stats.codes == {"SQLITE_BUSY_SNAPSHOT": 1}
    assert stats.successful_retries == 1
    conn.close()
    other.close()


def test_on_busy_callback_sees_each_code(holder: sqlite3.Connection, writer: sqlite3.Connection) -> None:
    seen: list[str] = []
    retrier = Retrier(2, 0.0, sleep=lambda s: None, on_busy=seen.append)
    with pytest.raises(sqlite3.OperationalError):
        retrier.call("receive", lambda: writer.execute("BEGIN IMMEDIATE"))
    assert seen == ["SQLITE_BUSY", "SQLITE_BUSY"]


def test_counters_are_per_operation_and_merge() -> None:
    retrier = Retrier(3, 0.0, sleep=lambda s: None)
    retrier.call("a", lambda: 1)
    retrier.call("a", lambda: 2)
    retrier.call("b", lambda: 3)
    snap = retrier.snapshot()
    assert snap["a"]["operations"] == 2 and snap["a"]["attempts"] == 2
    assert snap["b"]["operations"] == 1
    merged = merge_stats([snap, snap])
    assert merged["a"].operations == 4
    assert OpStats.from_dict(merged["a"].as_dict()) == merged["a"]


# ---------------------------------------------------------------- transaction()


def test_transaction_commits(db_file: Path) -> None:
    conn = _open(db_file)
    with transaction(conn):
        assert conn.in_transaction
        conn.execute("insert into t (v) values ('kept')")
    assert not conn.in_transaction
    check = _open(db_file)
    assert check.execute("select count(*) from t where v = 'kept'").fetchone()[0] == 1
    conn.close()
    check.close()


def test_transaction_rolls_back_on_error(db_file: Path) -> None:
    conn = _open(db_file)
    with pytest.raises(RuntimeError), transaction(conn):
        conn.execute("insert into t (v) values ('lost')")
        raise RuntimeError("boom")
    assert not conn.in_transaction
    assert conn.execute("select count(*) from t where v = 'lost'").fetchone()[0] == 0
    # the write lock is free again: another writer gets it at once
    other = _open(db_file, busy_timeout_ms=0)
    other.execute("BEGIN IMMEDIATE")
    other.rollback()
    conn.close()
    other.close()


def test_transaction_rolls_back_on_sqlite_error(db_file: Path) -> None:
    conn = _open(db_file)
    with pytest.raises(sqlite3.IntegrityError), transaction(conn):
        conn.execute("insert into t (id, v) values (50, 'first')")
        conn.execute("insert into t (id, v) values (50, 'again')")
    assert not conn.in_transaction
    assert conn.execute("select count(*) from t where id = 50").fetchone()[0] == 0
    conn.close()


def test_transaction_immediate_takes_the_write_lock_up_front(
    holder: sqlite3.Connection, writer: sqlite3.Connection
) -> None:
    with pytest.raises(sqlite3.OperationalError) as info, transaction(writer, immediate=True):
        pass
    assert classify(info.value) == "SQLITE_BUSY"
    assert not writer.in_transaction
    # a deferred BEGIN does not ask for the lock yet, and a WAL read goes through
    with transaction(writer, immediate=False):
        assert writer.execute("select count(*) from t").fetchone()[0] == 1
