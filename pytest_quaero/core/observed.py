"""The observed SQLite connection: every statement timed, counted and filed under its operation.

Connections opened through :func:`pytest_quaero.core.db.connect` are :class:`ObservedConnection`
objects. Each statement is timed and classified, and the connection's own ``in_transaction``
and ``total_changes`` say what it did to the database, whatever code issued it:

* a **write transaction** holds SQLite's write lock from ``BEGIN IMMEDIATE``/``EXCLUSIVE``
  returning (or from the first write of a deferred transaction) until it ends; that span
  is its **hold** time. The time ``BEGIN IMMEDIATE`` (or that first write) took is the
  **writer wait**: the lock was not free before it returned;
* a write in autocommit mode (one statement, e.g. goqite's ``UPDATE ... RETURNING``
  receive) holds the lock only while SQLite executes it, which cannot be told apart from
  the wait from outside: its whole duration counts as writer wait, never as hold, so
  contention can never look like a lock held too long;
* statements are counted by kind (select, insert, update, delete, begin, commit, other),
  rows changed from ``total_changes``, rollbacks whichever way they happen; lock errors
  are counted where SQLite raised them, even when the code under test swallows them.

What is measured goes to the run's :class:`~pytest_quaero.core.instruments.Instruments`
(the one active when the connection was opened); outside a run a connection costs one
attribute check per statement.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_quaero.core.instruments import Instruments, active, current_operation, note_failure, note_lock_error

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

__all__ = ["SYNCHRONOUS_NAMES", "ObservedConnection", "ObservedCursor"]

_T = TypeVar("_T")

_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
_KINDS = {"SELECT": "select", "INSERT": "insert", "UPDATE": "update", "DELETE": "delete", "REPLACE": "insert",
          "BEGIN": "begin", "COMMIT": "commit", "END": "commit", "ROLLBACK": "rollback", "WITH": "select"}

#: PRAGMA synchronous numbers as SQLite names them
SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}

def _lock_error_name(exc: sqlite3.Error) -> str | None:
    # SQLITE_BUSY (5) and SQLITE_LOCKED (6) with their extended codes; the message on Python 3.10
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return str(getattr(exc, "sqlite_errorname", code)) if code & 0xFF in (5, 6) else None
    message = str(exc).lower()
    if message.startswith("database is locked"):
        return "SQLITE_BUSY"
    return "SQLITE_LOCKED" if message.startswith(("database table is locked", "database schema is locked")) else None


_PARSED: dict[str, tuple[str, ...]] = {}


def _words(sql: str) -> tuple[str, ...]:
    """The first two words of a statement, upper case; cached, as a run repeats a few statements."""
    words = _PARSED.get(sql)
    if words is None:
        words = tuple(sql.lstrip()[:40].upper().split()[:2])
        if len(_PARSED) < 4096:  # a program that builds SQL text per call must not grow this forever
            _PARSED[sql] = words
    return words


class ObservedConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` (``factory=``) that times and counts what it runs; see the module doc."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._instruments = active()
        self._lock_since: float | None = None  # when this connection got the write lock
        self._lock_wait = 0.0
        self._lock_op = "other"
        if self._instruments is not None:
            self._instruments.opened()

    @property
    def instruments(self) -> Instruments | None:
        """The run's instruments this connection reports to (None: opened outside a run)."""
        return self._instruments

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or ObservedCursor)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self._observe(sql, _CONNECTION_EXECUTE, self, sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        return self._observe(sql, _CONNECTION_EXECUTEMANY, self, sql, parameters)

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        return self._observe(script, _CONNECTION_EXECUTESCRIPT, self, script)

    def commit(self) -> None:
        self._observe("COMMIT", _CONNECTION_COMMIT, self, count=self.in_transaction)

    def rollback(self) -> None:
        self._observe("ROLLBACK", _CONNECTION_ROLLBACK, self, count=self.in_transaction)

    def _observe(self, sql: str, method: Callable[..., _T], *args: Any, count: bool = True) -> _T:
        instruments = self._instruments
        if instruments is None:
            return method(*args)
        words = _words(sql)
        was_in = self.in_transaction
        changes = self.total_changes
        started = time.perf_counter()
        try:
            result = method(*args)
        except sqlite3.Error as exc:
            code = _lock_error_name(exc)
            if code is not None:
                instruments.busy(current_operation(), code)
                # what this connection really waited with, for the fast-busy diagnosis of the caller
                row = _CONNECTION_EXECUTE(self, "PRAGMA busy_timeout").fetchone()
                note_lock_error(int(row[0]) if row else None)
            note_failure(self._describe_failure(sql))
            raise
        finally:
            self._after(instruments, words, was_in, changes, started, time.perf_counter(), count)
        return result

    def configuration(self) -> tuple[int, str, str]:
        """(busy_timeout ms, journal_mode, synchronous) read back from SQLite, not counted as statements."""
        def read(name: str) -> Any:
            return _CONNECTION_EXECUTE(self, f"PRAGMA {name}").fetchone()[0]

        synchronous = int(read("synchronous"))
        return int(read("busy_timeout")), str(read("journal_mode")).lower(), SYNCHRONOUS_NAMES.get(synchronous, "?")

    def _describe_failure(self, sql: str) -> str:
        """The statement that failed and the pragmas its connection ran with, for an error message."""
        statement = " ".join(sql.split())
        statement = statement if len(statement) <= 120 else statement[:117] + "..."
        try:
            timeout, journal, synchronous = self.configuration()
            pragmas = f"busy_timeout={timeout}, journal_mode={journal}, synchronous={synchronous}"
        except sqlite3.Error:
            pragmas = "pragmas unreadable"
        return f"{statement!r} on a connection with {pragmas}"

    def _after(self, instruments: Instruments, words: tuple[str, ...], was_in: bool, changes: int, started: float,
               ended: float, count: bool) -> None:
        op = current_operation()
        keyword = words[0] if words else ""
        if count:
            instruments.statement(op, _KINDS.get(keyword, "other"), self.total_changes - changes)
        now_in = self.in_transaction
        takes_lock = keyword in _WRITES or (keyword == "BEGIN" and len(words) > 1
                                            and words[1] in ("IMMEDIATE", "EXCLUSIVE"))
        if now_in and self._lock_since is None and takes_lock:
            # BEGIN IMMEDIATE/EXCLUSIVE returned, or the first write of a (deferred or implicit) transaction
            self._lock_since, self._lock_wait, self._lock_op = ended, ended - started, op
        elif not was_in and not now_in and keyword in _WRITES:
            instruments.wait(op, ended - started)  # an autocommit write: its lock wait and hold are one
        if was_in and not now_in:
            rolled_back = keyword == "ROLLBACK"
            if self._lock_since is not None:
                instruments.transaction(self._lock_op, ended - self._lock_since, self._lock_wait, rolled_back)
            elif rolled_back:
                instruments.transaction(op, None, 0.0, True)
            self._lock_since = None


class ObservedCursor(sqlite3.Cursor):
    """Cursor statements are observed like the connection's own."""

    def execute(self, sql: str, parameters: Any = (), /) -> Self:
        connection = self.connection
        if isinstance(connection, ObservedConnection):
            connection._observe(sql, _CURSOR_EXECUTE, self, sql, parameters)
        else:
            _CURSOR_EXECUTE(self, sql, parameters)
        return self  # sqlite3's Cursor.execute returns the cursor itself

    def executemany(self, sql: str, parameters: Any, /) -> Self:
        connection = self.connection
        if isinstance(connection, ObservedConnection):
            connection._observe(sql, _CURSOR_EXECUTEMANY, self, sql, parameters)
        else:
            _CURSOR_EXECUTEMANY(self, sql, parameters)
        return self


_CONNECTION_EXECUTE: Callable[..., sqlite3.Cursor] = sqlite3.Connection.execute
_CONNECTION_EXECUTEMANY: Callable[..., sqlite3.Cursor] = sqlite3.Connection.executemany
_CONNECTION_EXECUTESCRIPT: Callable[..., sqlite3.Cursor] = sqlite3.Connection.executescript
_CONNECTION_COMMIT: Callable[..., None] = sqlite3.Connection.commit
_CONNECTION_ROLLBACK: Callable[..., None] = sqlite3.Connection.rollback
_CURSOR_EXECUTE: Callable[..., sqlite3.Cursor] = sqlite3.Cursor.execute
_CURSOR_EXECUTEMANY: Callable[..., sqlite3.Cursor] = sqlite3.Cursor.executemany
