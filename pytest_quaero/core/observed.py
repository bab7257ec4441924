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

import contextlib
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pytest_quaero.core import ledger
from pytest_quaero.core.instruments import (
    ATTEMPT,
    Instruments,
    active,
    base_operation,
    current_operation,
    instrumenting,
    note_failure,
    note_lock_error,
    operation_serial,
)

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

__all__ = ["PATCH_CONNECT", "SYNCHRONOUS_NAMES", "ObservedConnection", "ObservedCursor", "observing"]

_T = TypeVar("_T")

#: the exploration in progress (:class:`pytest_quaero.core.explore.scheduler.Scheduler`), or None:
#: while set, every statement of an observed connection is one of its scheduling points
SCHEDULER: Any = None

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
#: statements that can fire the ledger's goqite triggers
_LEDGER_WRITES = frozenset({"INSERT", "DELETE", "REPLACE"})
#: how often a connection tries to install the ledger's triggers
_ARM_TRIES = 3


def _words(sql: str) -> tuple[str, ...]:
    """The first two words of a statement, upper case; cached, as a run repeats a few statements.

    A third element, ``"goqite"``, marks a write that names the goqite table: the ledger's
    triggers may have recorded rows for it (:func:`pytest_quaero.core.ledger.collect`).
    """
    words = _PARSED.get(sql)
    if words is None:
        words = tuple(sql.lstrip()[:40].upper().split()[:2])
        lowered = sql.lower()
        if words and words[0] in _LEDGER_WRITES and "goqite" in lowered:
            # an INSERT ... RETURNING has not counted its changes yet when execute() returns
            words = (*words[:2], "goqite returning" if "returning" in lowered else "goqite")
        if len(_PARSED) < 4096:  # a program that builds SQL text per call must not grow this forever
            _PARSED[sql] = words
    return words


def _rows_of(result: object) -> int:
    """Rows a statement inserted itself (at least 1): more changes than that were the ledger's trigger."""
    rowcount = getattr(result, "rowcount", -1)
    return max(1, rowcount if isinstance(rowcount, int) else -1)


class ObservedConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` (``factory=``) that times and counts what it runs; see the module doc."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._instruments = active()
        self._lock_since: float | None = None  # when this connection got the write lock
        self._lock_wait = 0.0
        self._lock_op = "other"
        #: total_changes after this connection's last statement, and that statement's operation
        self._last_total = 0
        self._last_op = "other"
        self._last_serial = 0
        #: the ledger's triggers are on this connection (0: not yet; tried again at a later write)
        self._armed = False
        self._arm_tries = 0
        #: who opened it (the top package of the code that called sqlite3.connect), until its
        #: configuration is recorded (at its first statement that is not a PRAGMA); None once recorded
        self._opened_by: str | None = None
        if self._instruments is not None:
            self._opened_by = _opener()
            self._instruments.opened(current_operation())
            self._arm()

    def _arm(self) -> None:
        if self._instruments is None or self._arm_tries >= _ARM_TRIES:
            return
        self._arm_tries += 1
        try:
            self._armed = ledger.arm(self)
        except sqlite3.Error:  # a lock on the schema, a read-only file: the next write tries again
            self._armed = False

    @property
    def instruments(self) -> Instruments | None:
        """The run's instruments this connection reports to (None: opened outside a run)."""
        return self._instruments

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(_observed_cursor(factory))

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

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> Literal[False]:
        # sqlite3's own __exit__ commits or rolls back in C, past commit() and rollback(): done through
        # them here, so `with conn:` is counted (and explored) like an explicit commit, with its semantics
        if exc_type is not None:
            self.rollback()
            return False
        try:
            self.commit()
        except BaseException:
            self.rollback()  # as sqlite3 does: a failed commit must not keep the database locked
            raise
        return False

    def close(self) -> None:
        if SCHEDULER is None:
            _CONNECTION_CLOSE(self)
        else:  # closing ends this connection's transaction: a scheduling point like COMMIT
            SCHEDULER.statement(self, "CLOSE", _CONNECTION_CLOSE, (self,))

    def _observe(self, sql: str, method: Callable[..., _T], *args: Any, count: bool = True) -> _T:
        instruments = self._instruments
        if instruments is None:
            return method(*args)
        words = _words(sql)
        if self._opened_by is not None and words and words[0] != "PRAGMA":
            self._record_configuration(instruments)
        was_in = self.in_transaction
        changes = self.total_changes
        if changes != self._last_total:
            # an INSERT/UPDATE ... RETURNING counts its changes only once its rows are all fetched,
            # after its execute() returned: they are that statement's operation's, not this one's (and
            # an attempt that has ended was refiled already: its rows go to its operation)
            last = self._last_op
            if last.endswith(ATTEMPT) and self._last_serial != operation_serial():
                last = base_operation(last)
            instruments.rows(last, changes - self._last_total)
        started = time.perf_counter()
        result = None
        try:
            # an exploration (core/explore) makes each statement a scheduling point of its own
            result = method(*args) if SCHEDULER is None else SCHEDULER.statement(self, sql, method, args)
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
            self._after(instruments, words, was_in, changes, started, time.perf_counter(), count, result)
        return result

    def configuration(self) -> tuple[int, str, str]:
        """(busy_timeout ms, journal_mode, synchronous) read back from SQLite, not counted as statements.

        The caller records it (:func:`pytest_quaero.core.db.connect` does, with its origin), so
        the connection does not record itself again at its first statement.
        """
        self._opened_by = None
        return self._read_configuration()

    def _read_configuration(self) -> tuple[int, str, str]:
        def read(name: str) -> Any:
            return _CONNECTION_EXECUTE(self, f"PRAGMA {name}").fetchone()[0]

        synchronous = int(read("synchronous"))
        return int(read("busy_timeout")), str(read("journal_mode")).lower(), SYNCHRONOUS_NAMES.get(synchronous, "?")

    def _record_configuration(self, instruments: Instruments) -> None:
        # A connection the code under test opened itself (sqlite3.connect inside a library or a
        # handler): its pragmas are what the library set after connecting, read back before its
        # first real statement. Recorded once; a connection that cannot be read is left out.
        opened_by, self._opened_by = self._opened_by, None
        try:
            configuration = self._read_configuration()
        except sqlite3.Error:
            return
        instruments.configured(opened_by or "unknown", configuration)

    def _describe_failure(self, sql: str) -> str:
        """The statement that failed and the pragmas its connection ran with, for an error message."""
        statement = " ".join(sql.split())
        statement = statement if len(statement) <= 120 else statement[:117] + "..."
        try:
            timeout, journal, synchronous = self._read_configuration()
            pragmas = f"busy_timeout={timeout}, journal_mode={journal}, synchronous={synchronous}"
        except sqlite3.Error:
            pragmas = "pragmas unreadable"
        return f"{statement!r} on a connection with {pragmas}"

    def _after(self, instruments: Instruments, words: tuple[str, ...], was_in: bool, changes: int, started: float,
               ended: float, count: bool, result: object = None) -> None:
        op = current_operation()
        keyword = words[0] if words else ""
        changed = self.total_changes - changes
        if self._armed and len(words) > 2 and (keyword != "INSERT" or words[2] != "goqite"
                                                or changed > _rows_of(result)):
            # the ledger's own rows are not the code's; a connection broken under the statement files nothing
            with contextlib.suppress(sqlite3.Error):
                changed -= ledger.collect(self, instruments)
        if count:
            instruments.statement(op, _KINDS.get(keyword, "other"), changed)
        now_in = self.in_transaction
        watch = ledger.current_watch()
        if watch is not None:
            watch.statements += 1
            watch.rows += changed
            watch.armed += self._armed
        if not self._armed and keyword in _WRITES and not now_in:
            self._arm()  # opened before the schema existed, or met a lock while arming
        self._last_total, self._last_op, self._last_serial = self.total_changes, op, operation_serial()
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
_CONNECTION_CLOSE: Callable[..., None] = sqlite3.Connection.close
_CURSOR_EXECUTE: Callable[..., sqlite3.Cursor] = sqlite3.Cursor.execute
_CURSOR_EXECUTEMANY: Callable[..., sqlite3.Cursor] = sqlite3.Cursor.executemany


_combined_cursors: dict[type, type] = {}


def _observed_cursor(factory: Any) -> Any:
    """A cursor class whose statements are observed: a library's own cursor class (Django's) too."""
    if factory is None or factory is sqlite3.Cursor:
        return ObservedCursor
    if not isinstance(factory, type) or not issubclass(factory, sqlite3.Cursor) or issubclass(factory, ObservedCursor):
        return factory  # a callable that is not a cursor class: left alone
    combined = _combined_cursors.get(factory)
    if combined is None:
        # the library's class first: its execute() runs, and its super() call lands in the observed one
        combined = _combined_cursors[factory] = type(f"Observed{factory.__name__}", (factory, ObservedCursor), {})
    return combined


#: modules whose frames are skipped when naming who opened a connection
_PLUMBING = ("pytest_quaero.core.observed", "sqlite3", "sqlite3.dbapi2")


def _opener() -> str:
    """The top package of the code that called ``sqlite3.connect`` (``sqlalchemy``, ``django``, ``conftest``)."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(12):
        if frame is None:
            break
        module = str(frame.f_globals.get("__name__", ""))
        if module not in _PLUMBING:
            return module.split(".")[0] or "unknown"
        frame = frame.f_back
    return "unknown"


# --- every sqlite3.connect of the run

#: False turns :func:`observing` into plain :func:`instrumenting` (the instruments benchmark's plain side)
PATCH_CONNECT = True

_ORIGINAL_CONNECT = sqlite3.connect
_FACTORY_POSITION = 5  # connect(database, timeout, detect_types, isolation_level, check_same_thread, factory, ...)
_combined: dict[type, type] = {}
_patch_lock = threading.Lock()
_patch_depth = 0


def _observed_factory(factory: Any) -> Any:
    """The factory that makes ``factory``'s connections observed too (itself if it cannot)."""
    if factory is None or factory is sqlite3.Connection:
        return ObservedConnection
    if not isinstance(factory, type) or not issubclass(factory, sqlite3.Connection):
        return factory  # a callable that is not a class: left alone, its connections go unobserved
    if issubclass(factory, ObservedConnection):
        return factory
    combined = _combined.get(factory)
    if combined is None:
        # the user's class first: its own execute() runs, and its super() call lands in the observed one
        combined = _combined[factory] = type(f"Observed{factory.__name__}", (factory, ObservedConnection), {})
    return combined


def _connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    if len(args) > _FACTORY_POSITION:
        args = (*args[:_FACTORY_POSITION], _observed_factory(args[_FACTORY_POSITION]), *args[_FACTORY_POSITION + 1:])
    else:
        kwargs["factory"] = _observed_factory(kwargs.get("factory"))
    connection: sqlite3.Connection = _ORIGINAL_CONNECT(*args, **kwargs)
    return connection


@contextmanager
def observing(instruments: Instruments | None = None) -> Iterator[Instruments]:
    """:func:`~pytest_quaero.core.instruments.instrumenting`, and every ``sqlite3.connect`` observed.

    While the block runs, ``sqlite3.connect`` (and ``sqlite3.dbapi2.connect``) hand out
    :class:`ObservedConnection` objects, so a hook's or a library's own connections are
    measured like the plugin's. Code that bound ``connect`` before the run (``from sqlite3
    import connect`` at import time) keeps the original; ``pytest_quaero.connect`` always observes.
    """
    global _patch_depth
    with instrumenting(instruments) as current:
        patch = PATCH_CONNECT
        if patch:
            with _patch_lock:
                _patch_depth += 1
                sqlite3.connect = sqlite3.dbapi2.connect = _connect  # type: ignore[assignment]
        try:
            yield current
        finally:
            if patch:
                with _patch_lock:
                    _patch_depth -= 1
                    if _patch_depth == 0:
                        sqlite3.connect = sqlite3.dbapi2.connect = _ORIGINAL_CONNECT
