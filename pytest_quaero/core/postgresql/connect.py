"""The one place PostgreSQL connections are opened: session settings set, read back, observed.

The SQLite backend's :func:`pytest_quaero.core.db.connect` in PostgreSQL's terms:

* ``lock_timeout`` is the run's busy timeout (``--quaero-busy-timeout``): how long a
  statement waits for a lock another transaction holds before it fails (55P03), exactly
  what SQLite's busy_timeout means;
* ``synchronous_commit`` follows ``--quaero-synchronous``: ``off`` for OFF and NORMAL (like
  WAL + NORMAL, a crash of the machine may lose the last commits, never corrupt), ``on`` for
  FULL and EXTRA;
* the isolation level and ``statement_timeout`` are the server's, the DSN's
  (``options=-c default_transaction_isolation=serializable``) or ``PGOPTIONS``'s: the run
  reports what each connection really runs with, read back from the server.

Connections are in autocommit mode, as the SQLite ones are (``isolation_level=None``): one
statement is one transaction unless the code says ``BEGIN``. Every statement is timed and
counted into the run's :class:`~pytest_quaero.core.instruments.Instruments` like an
observed SQLite connection's: a transaction's *hold* runs from its first statement that locks
rows other transactions may want (an UPDATE, a DELETE, a locking read ``FOR UPDATE``/``FOR
SHARE``) to its end, those rows being held that long; that statement's duration is its *wait*.
A transaction that only inserts holds nothing anyone waits for (hold 0), unlike SQLite's one
write lock; an autocommit write is all wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq, sql

from pytest_quaero.core import ledger
from pytest_quaero.core.instruments import (
    Instruments,
    active,
    current_operation,
    note_failure,
    note_lock_error,
    operation_serial,
)
from pytest_quaero.core.postgresql.errors import lock_error_name
from pytest_quaero.core.settings import Settings

__all__ = [
    "ObservedPgConnection",
    "ObservedPgCursor",
    "Session",
    "connect",
    "last_read_waited_for_locks",
    "read_session",
    "transaction",
]

_KINDS = {"SELECT": "select", "INSERT": "insert", "UPDATE": "update", "DELETE": "delete", "BEGIN": "begin",
          "START": "begin", "COMMIT": "commit", "END": "commit", "ROLLBACK": "rollback", "ABORT": "rollback",
          "WITH": "select"}
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})
_LOCKING_READ = (" FOR UPDATE", " FOR NO KEY UPDATE", " FOR SHARE", " FOR KEY SHARE")
_IDLE = pq.TransactionStatus.IDLE
_INERROR = pq.TransactionStatus.INERROR
_PARSED: dict[str, tuple[str, bool, bool, bool]] = {}
_thread = threading.local()


def last_read_waited_for_locks() -> bool:
    """The operation this thread is in (or just left) ran a locking read that waits for other
    transactions' row locks (``FOR UPDATE`` without ``SKIP LOCKED``)."""
    return bool(getattr(_thread, "waited_serial", -1) == operation_serial())


def _parse(text: str) -> tuple[str, bool, bool, bool]:
    """(first word, upper case; whether it writes; whether it locks rows that exist already, which other
    transactions may want: an UPDATE, DELETE or locking read, not an INSERT's new row; whether it is a
    locking read that waits for a row another transaction locked: ``FOR UPDATE`` without ``SKIP LOCKED``)."""
    parsed = _PARSED.get(text)
    if parsed is None:
        upper = " ".join(text.split()).upper()
        keyword = upper.split(" ", 1)[0] if upper else ""
        locking_read = any(clause in upper for clause in _LOCKING_READ)
        writes = keyword in _WRITES or (keyword == "WITH" and any(f" {word} " in upper for word in _WRITES))
        locks = locking_read or (writes and (keyword != "INSERT" and (keyword != "WITH" or " UPDATE " in upper
                                                                         or " DELETE " in upper)))
        waits = locking_read and "SKIP LOCKED" not in upper and "NOWAIT" not in upper
        parsed = (keyword, writes, locks, waits)
        if len(_PARSED) < 4096:  # code that builds SQL text per call must not grow this forever
            _PARSED[text] = parsed
    return parsed


def _text(query: Any, conn: psycopg.Connection[Any]) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    if isinstance(query, sql.Composable):
        return query.as_string(conn)
    return str(query)


class ObservedPgConnection(psycopg.Connection[Any]):
    """A psycopg connection whose statements the run measures (set up by :func:`connect`)."""

    _instruments: Instruments | None = None
    _lock_timeout_ms: int | None = None
    _lock_since: float | None = None
    _lock_wait = 0.0
    _lock_op = "other"
    #: the transaction wrote (an INSERT) but locked no row another transaction could want
    _wrote_op: str | None = None

    @property
    def instruments(self) -> Instruments | None:
        return self._instruments

    def _end_transaction(self, ended: float, rolled_back: bool, op: str) -> None:
        instruments = self._instruments
        if instruments is None:
            return
        if self._lock_since is not None:
            instruments.transaction(self._lock_op, ended - self._lock_since, self._lock_wait, rolled_back)
        elif self._wrote_op is not None:
            # a write transaction all the same, holding nothing anyone waits for: unlike SQLite's one
            # write lock, the new rows of an INSERT are no other transaction's business until it commits
            instruments.transaction(self._wrote_op, 0.0, self._lock_wait, rolled_back)
        elif rolled_back:
            instruments.transaction(op, None, 0.0, True)
        self._lock_since, self._wrote_op = None, None

    def commit(self) -> None:
        failed = self.info.transaction_status == _INERROR
        super().commit()
        self._end_transaction(time.perf_counter(), failed, current_operation())

    def rollback(self) -> None:
        was_in = self.info.transaction_status != _IDLE
        super().rollback()
        if was_in:
            self._end_transaction(time.perf_counter(), True, current_operation())


class ObservedPgCursor(psycopg.Cursor[Any]):
    """Every ``execute`` (the connection's own too) timed, counted and filed under the thread's operation."""

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                binary: bool | None = None) -> ObservedPgCursor:
        conn = self.connection
        instruments = getattr(conn, "_instruments", None)
        if instruments is None or not isinstance(conn, ObservedPgConnection):
            super().execute(query, params, prepare=prepare, binary=binary)
            return self
        keyword, writes, locks, waits = _parse(_text(query, conn))
        if waits:
            _thread.waited_serial = operation_serial()
        status = conn.info.transaction_status
        if status == _IDLE and (conn._lock_since is not None or conn._wrote_op is not None):
            # a transaction ended where no statement of ours saw it (psycopg's own transaction() block)
            conn._end_transaction(time.perf_counter(), False, conn._lock_op)
        was_in, was_failed = status != _IDLE, status == _INERROR
        started = time.perf_counter()
        failed = False
        try:
            super().execute(query, params, prepare=prepare, binary=binary)
        except psycopg.Error as exc:
            failed = True
            name = lock_error_name(exc)
            if name is not None:
                instruments.busy(current_operation(), name)
                note_lock_error(conn._lock_timeout_ms)
            text = " ".join(_text(query, conn).split())
            note_failure(f"{text[:117] + '...' if len(text) > 120 else text!r} on a PostgreSQL connection with "
                         f"lock_timeout={conn._lock_timeout_ms}ms")
            raise
        finally:
            ended = time.perf_counter()
            op = current_operation()
            rows = self.rowcount if keyword in _WRITES and not failed and self.rowcount > 0 else 0
            instruments.statement(op, _KINDS.get(keyword, "other"), rows)
            watch = ledger.current_watch()
            if watch is not None:
                watch.statements += 1
                watch.rows += rows
            now_in = conn.info.transaction_status != _IDLE
            if now_in and conn._lock_since is None and locks and not failed:
                conn._lock_since, conn._lock_wait, conn._lock_op = ended, ended - started, op
            elif now_in and conn._lock_since is None and conn._wrote_op is None and writes and not failed:
                conn._wrote_op, conn._lock_wait = op, ended - started
            elif not was_in and not now_in and writes:
                instruments.wait(op, ended - started)  # an autocommit write: its lock wait and hold are one
            if was_in and not now_in:
                conn._end_transaction(ended, keyword in ("ROLLBACK", "ABORT") or was_failed or failed, op)
        return self


@dataclass(frozen=True)
class Session:
    """What a connection really runs with, read back from the server."""

    isolation: str
    lock_timeout_ms: int
    statement_timeout_ms: int
    synchronous_commit: str
    search_path: str
    server_version: str
    max_connections: int

    def as_dict(self) -> dict[str, Any]:
        return {"isolation": self.isolation, "lock_timeout_ms": self.lock_timeout_ms,
                "statement_timeout_ms": self.statement_timeout_ms, "synchronous_commit": self.synchronous_commit,
                "search_path": self.search_path, "server_version": self.server_version,
                "max_connections": self.max_connections}


_SESSION_SQL = (
    "select current_setting('transaction_isolation'), current_setting('lock_timeout'), "
    "current_setting('statement_timeout'), current_setting('synchronous_commit'), "
    "current_setting('search_path'), current_setting('server_version'), current_setting('max_connections')::int"
)


def _ms(text: str) -> int:
    """``'10s'`` / ``'500ms'`` / ``'0'`` / ``'1min'`` (SHOW's units) -> milliseconds."""
    units = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(float(digits) * units.get(text[len(digits):], 1))


def read_session(conn: psycopg.Connection[Any]) -> Session:
    """The connection's isolation, timeouts, commit durability and search path, as the server says."""
    row = psycopg.Connection.execute(conn, _SESSION_SQL).fetchone()
    assert row is not None
    isolation, lock_timeout, statement_timeout, synchronous_commit, search_path, version, max_connections = row
    return Session(str(isolation).upper(), _ms(str(lock_timeout)), _ms(str(statement_timeout)),
                   str(synchronous_commit), str(search_path), str(version), int(max_connections))


def connect(dsn: str, settings: Settings, *, origin: str = "plugin",
            lock_timeout_ms: int | None = None) -> ObservedPgConnection:
    """A connection to ``dsn`` with the run's session settings, observed by the run in progress.

    ``lock_timeout_ms`` overrides the settings' busy timeout (the monitor waits patiently).
    """
    conn = ObservedPgConnection.connect(dsn, autocommit=True, cursor_factory=ObservedPgCursor)
    timeout = settings.busy_timeout_ms if lock_timeout_ms is None else lock_timeout_ms
    durable = "on" if settings.synchronous in ("FULL", "EXTRA") else "off"
    # set_config() with bound values: plain SET takes no parameters
    psycopg.Connection.execute(conn, "select set_config('lock_timeout', %s, false), "
                                     "set_config('synchronous_commit', %s, false)", (f"{int(timeout)}ms", durable))
    conn._lock_timeout_ms = int(timeout)
    instruments = active()
    if instruments is not None:
        session = read_session(conn)  # read back, not taken from the settings (and not counted)
        conn._instruments = instruments
        instruments.opened(current_operation())
        instruments.configured(origin, (session.lock_timeout_ms, f"postgresql {session.isolation.lower()}",
                                        f"synchronous_commit={session.synchronous_commit}"))
    return conn


@contextmanager
def transaction(conn: psycopg.Connection[Any], isolation: str | None = None) -> Iterator[psycopg.Connection[Any]]:
    """``BEGIN [ISOLATION LEVEL ...]`` ... ``COMMIT`` as statements (observed, like SQLite's), rolled
    back on any error so a retry starts clean. A serialization failure may come at COMMIT itself."""
    conn.execute("BEGIN" if isolation is None else f"BEGIN ISOLATION LEVEL {isolation}")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if not conn.closed and conn.info.transaction_status != _IDLE:
            conn.execute("ROLLBACK")
        raise
