"""Lock errors an ORM or task library wraps in its own exception type are still lock errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gallery.cases import BASE

from pytest_quaero.core import db
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.retry import classify, database_error
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import JobStore
from pytest_quaero.core.worker import Endpoint


class OperationalError(Exception):
    """An ORM's own error type (SQLAlchemy style: the driver's error as ``.orig``), no sqlite3.Error."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__(f"(sqlite3.OperationalError) {orig}")
        self.orig = orig


def _busy() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("database is locked")


def test_the_database_error_is_found_through_orig_cause_and_context() -> None:
    busy = _busy()
    assert database_error(OperationalError(busy)) is busy
    try:
        try:
            raise busy
        except sqlite3.Error as exc:
            raise RuntimeError("Django-style wrapper") from exc
    except RuntimeError as wrapped:
        assert database_error(wrapped) is busy and classify(wrapped) == "SQLITE_BUSY"
    try:
        try:
            raise busy
        except sqlite3.Error:
            raise KeyError("raised while handling it") from None
    except KeyError as unrelated:
        assert database_error(unrelated) is None  # `from None`: the author said it is not the cause
    looped = RuntimeError("a")
    looped.__context__ = RuntimeError("b")
    looped.__context__.__context__ = looped
    assert database_error(looped) is None and classify(ValueError("x")) is None


class OrmQueue(Queue):
    """goqite's queue behind an ORM: its receive runs with no busy_timeout and raises the ORM's error."""

    def receive(self):  # type: ignore[no-untyped-def]
        try:
            return super().receive()
        except sqlite3.OperationalError as exc:
            raise OperationalError(exc) from None


def orm_endpoint(db_path: str, settings: Settings) -> Endpoint:
    conn = db.connect(db_path, settings)
    conn.execute("PRAGMA busy_timeout = 0")  # the ORM's own connection setup
    queue = OrmQueue(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                     max_receive=settings.max_receive)
    return Endpoint(queue=queue, store=JobStore(conn), close=conn.close)


def test_a_wrapped_busy_error_is_retried_and_counted_not_a_crash(tmp_path: Path) -> None:
    settings = BASE.replace(source="test", workers=8, stagger="0ms", job_time="0ms", poll_interval="5ms",
                            retry_attempts=8, retry_backoff="2ms")
    result = run_scenario(Scenario("wrapped", 10, 30, 60.0), settings, run_dir=tmp_path, endpoint_factory=orm_endpoint)
    receive = result.retry.get("queue_receive", {})
    assert receive.get("busy_events", 0) > 0, result.retry  # the retry wrapper saw them through `.orig`
    assert not [error for error in result.worker_errors if "crashed" in error], result.worker_errors
    assert result.busy_errors >= receive["busy_events"]
