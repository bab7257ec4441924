"""What every SQLite connection of a run does: statements, write transactions, lock hold and wait.

Connections opened through :func:`pytest_quaero.core.db.connect` (and, during a run,
through ``sqlite3.connect`` itself) are :class:`ObservedConnection` objects. Each
statement is timed and classified, and the connection's own ``in_transaction`` and
``total_changes`` say what it did to the database, whatever code issued it:

* a **write transaction** holds SQLite's write lock from ``BEGIN IMMEDIATE``/``EXCLUSIVE``
  returning (or from the first write of a deferred transaction) until it ends; that span
  is its **hold** time. The time ``BEGIN IMMEDIATE`` (or that first write) took is the
  **writer wait**: the lock was not free before it returned;
* a write in autocommit mode (one statement, e.g. goqite's ``UPDATE ... RETURNING``
  receive) holds the lock only while SQLite executes it, which cannot be told apart from
  the wait from outside: its whole duration counts as writer wait, never as hold, so
  contention can never look like a lock held too long;
* statements are counted by kind (select, insert, update, delete, begin, commit, other),
  rows changed from ``total_changes``, rollbacks whichever way they happen.

Everything is filed under the operation the thread is doing (:func:`operation`, set by
the retry wrapper and the worker: ``receive``, ``queue_delete``, ``handler``, ...).
The samples are per process; a spawned worker sends its :meth:`Instruments.export` to
the pool, which merges it.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

__all__ = [
    "HARNESS_OPERATION",
    "Instruments",
    "ObservedConnection",
    "active",
    "current_operation",
    "forget_last_busy",
    "hidden_busy",
    "instrumenting",
    "last_busy_timeout_ms",
    "last_failure",
    "operation",
    "percentile",
]

_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
_KINDS = {"SELECT": "select", "INSERT": "insert", "UPDATE": "update", "DELETE": "delete", "REPLACE": "insert",
          "BEGIN": "begin", "COMMIT": "commit", "END": "commit", "ROLLBACK": "rollback", "WITH": "select"}

#: the operation of the harness's own thread (preparing, watching, checking): never the code under test
HARNESS_OPERATION = "harness"

_thread = threading.local()
_T = TypeVar("_T")


@contextmanager
def operation(name: str) -> Iterator[None]:
    """File every statement this thread runs inside the block under ``name``."""
    previous = getattr(_thread, "operation", None)
    _thread.operation = name
    try:
        yield
    finally:
        _thread.operation = previous


def current_operation() -> str:
    return getattr(_thread, "operation", None) or "other"


def forget_last_busy() -> None:
    """Start an operation with no lock error (nor failed statement) on record in this thread."""
    _thread.busy_timeout_ms = None
    _thread.last_failure = None


def last_failure() -> str | None:
    """The last statement that raised in this thread on an observed connection, with its pragmas."""
    value: str | None = getattr(_thread, "last_failure", None)
    return value


def last_busy_timeout_ms() -> int | None:
    """The busy_timeout (read back) of the connection that raised this thread's last lock error."""
    value: int | None = getattr(_thread, "busy_timeout_ms", None)
    return value


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


def hidden_busy(locks: dict[str, Any], retry: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Lock errors SQLite raised to the code under test that the retry counters never saw.

    Per operation: what the connections saw minus what reached the retry wrapper. A queue
    that catches "database is locked" and returns nothing, a library's own retry loop, a
    handler that swallows the error: each shows up here. The harness's own thread is left out.
    """
    hidden: dict[str, int] = {}
    for op, data in locks.get("operations", {}).items():
        if op == HARNESS_OPERATION:
            continue
        seen = int(data.get("busy_errors", 0))
        counted = int(retry.get(op, {}).get("busy_events", 0))
        if seen > counted:
            hidden[op] = seen - counted
    return {"total": sum(hidden.values()), "operations": hidden}


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    # the 1e-9 keeps 0.95 * 100 (= 95.00000000000001 in floating point) at rank 95
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered) - 1e-9) - 1))
    return ordered[rank]


@dataclass
class _OpTally:
    hold: list[float] = field(default_factory=list)
    wait: list[float] = field(default_factory=list)
    statements: Counter[str] = field(default_factory=Counter)
    write_transactions: int = 0
    rollbacks: int = 0
    rows_changed: int = 0
    #: SQLITE_BUSY/LOCKED raised to the code under test, by extended code, caught by it or not
    busy: Counter[str] = field(default_factory=Counter)


class Instruments:
    """The samples and counts of one run in one process, by operation.

    Each thread records into its own shard (no lock on the hot path: a statement costs a
    few dictionary updates); the shards are added up when the run is summarised.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self._shards: list[dict[str, _OpTally]] = []
        self.connections = 0

    def _op(self, name: str) -> _OpTally:
        shard: dict[str, _OpTally] | None = getattr(self._local, "shard", None)
        if shard is None:
            shard = self._local.shard = {}
            with self._lock:
                self._shards.append(shard)
        tally = shard.get(name)
        if tally is None:
            tally = shard[name] = _OpTally()
        return tally

    @property
    def ops(self) -> dict[str, _OpTally]:
        """Every shard added up, by operation."""
        total: dict[str, _OpTally] = {}
        with self._lock:
            shards = list(self._shards)
        for shard in shards:
            for name, tally in list(shard.items()):
                into = total.setdefault(name, _OpTally())
                into.hold.extend(tally.hold)
                into.wait.extend(tally.wait)
                into.statements.update(tally.statements)
                into.write_transactions += tally.write_transactions
                into.rollbacks += tally.rollbacks
                into.rows_changed += tally.rows_changed
                into.busy.update(tally.busy)
        return total

    def statement(self, op: str, kind: str, rows: int) -> None:
        tally = self._op(op)
        tally.statements[kind] += 1
        tally.rows_changed += rows

    def transaction(self, op: str, hold: float | None, wait: float, rolled_back: bool) -> None:
        tally = self._op(op)
        if hold is not None:
            tally.hold.append(hold)
            tally.write_transactions += 1
        tally.wait.append(wait)
        tally.rollbacks += int(rolled_back)

    def wait(self, op: str, seconds: float) -> None:
        self._op(op).wait.append(seconds)

    def busy(self, op: str, code: str) -> None:
        self._op(op).busy[code] += 1

    def opened(self) -> None:
        with self._lock:
            self.connections += 1

    # --- across processes

    def export(self) -> dict[str, Any]:
        """Raw samples, to merge in another process (see :meth:`merge`)."""
        return {"connections": self.connections, "ops": {
            name: {"hold": t.hold, "wait": t.wait, "statements": dict(t.statements),
                   "write_transactions": t.write_transactions, "rollbacks": t.rollbacks,
                   "rows_changed": t.rows_changed, "busy": dict(t.busy)}
            for name, t in self.ops.items()}}

    def merge(self, exported: dict[str, Any]) -> None:
        """Add another process's :meth:`export` (as a shard of its own)."""
        shard: dict[str, _OpTally] = {}
        for name, data in exported.get("ops", {}).items():
            shard[name] = _OpTally(list(data["hold"]), list(data["wait"]), Counter(data["statements"]),
                                   data["write_transactions"], data["rollbacks"], data["rows_changed"],
                                   Counter(data.get("busy", {})))
        with self._lock:
            self.connections += int(exported.get("connections", 0))
            self._shards.append(shard)

    # --- for the result

    def summary(self) -> dict[str, Any]:
        """Per operation and in total: hold and wait p50/p95/max (ms), statements, transactions, rows."""
        merged = self.ops
        ops = {name: _describe(t) for name, t in sorted(merged.items())}
        every = list(merged.values())
        total = _describe(_OpTally(
            [h for t in every for h in t.hold], [w for t in every for w in t.wait],
            sum((t.statements for t in every), Counter()), sum(t.write_transactions for t in every),
            sum(t.rollbacks for t in every), sum(t.rows_changed for t in every),
            sum((t.busy for t in every), Counter())))
        return {"connections": self.connections, "total": total, "operations": ops}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _spread(samples: list[float]) -> dict[str, float]:
    return {"p50": _ms(percentile(samples, 0.5)), "p95": _ms(percentile(samples, 0.95)),
            "max": _ms(max(samples, default=0.0)), "samples": len(samples)}


def _describe(tally: _OpTally) -> dict[str, Any]:
    return {
        "hold_ms": _spread(tally.hold),
        "wait_ms": _spread(tally.wait),
        "statements": dict(sorted(tally.statements.items())),
        "write_transactions": tally.write_transactions,
        "rollbacks": tally.rollbacks,
        "rows_changed": tally.rows_changed,
        "busy_errors": sum(tally.busy.values()),
        "busy_codes": dict(sorted(tally.busy.items())),
    }


class _Active:
    """The instruments of the run in progress in this process (one run at a time per process)."""

    def __init__(self) -> None:
        self.instruments: Instruments | None = None


_active = _Active()


def active() -> Instruments | None:
    return _active.instruments


@contextmanager
def instrumenting(instruments: Instruments | None = None) -> Iterator[Instruments]:
    """Measure every :class:`ObservedConnection` opened in this process until the block ends."""
    current = instruments or Instruments()
    previous, _active.instruments = _active.instruments, current
    try:
        yield current
    finally:
        _active.instruments = previous


class ObservedConnection(sqlite3.Connection):
    """A ``sqlite3.Connection`` (``factory=``) that times and counts what it runs; see the module doc."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._instruments = _active.instruments
        self._lock_since: float | None = None  # when this connection got the write lock
        self._lock_wait = 0.0
        self._lock_op = "other"
        if self._instruments is not None:
            self._instruments.opened()

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
                _thread.busy_timeout_ms = int(row[0]) if row else None
            _thread.last_failure = self._describe_failure(sql)
            raise
        finally:
            self._after(instruments, words, was_in, changes, started, time.perf_counter(), count)
        return result

    def _describe_failure(self, sql: str) -> str:
        """The statement that failed and the pragmas its connection ran with, for an error message."""
        statement = " ".join(sql.split())
        statement = statement if len(statement) <= 120 else statement[:117] + "..."
        try:
            pragmas = ", ".join(
                f"{name}={_CONNECTION_EXECUTE(self, f'PRAGMA {name}').fetchone()[0]}"
                for name in ("busy_timeout", "journal_mode", "synchronous"))
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
