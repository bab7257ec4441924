"""Retry with exponential backoff for busy/locked errors, and the counters that prove it.

Only SQLITE_BUSY and SQLITE_LOCKED (and their extended codes) are retried, told apart
by ``sqlite_errorcode`` (Python 3.11+) or, on 3.10, by SQLite's fixed messages. Any
other error is a bug and escapes at once. Each retry starts the whole operation again
(the caller's function), never a single statement: a BUSY_SNAPSHOT inside a
transaction can only be cured from the top.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pytest_quaero.core.instruments import (
    ATTEMPT,
    IDLE,
    RETRIED,
    active,
    forget_last_busy,
    last_busy_timeout_ms,
    operation,
)
from pytest_quaero.core.log import get_logger
from pytest_quaero.core.postgresql.errors import is_postgresql_error, lock_error_name

__all__ = [
    "OpStats",
    "Retrier",
    "classify",
    "database_error",
    "merge_stats",
    "transaction",
]

T = TypeVar("T")

SQLITE_BUSY = 5
SQLITE_LOCKED = 6
_EXTENDED_NAMES = {
    5: "SQLITE_BUSY",
    261: "SQLITE_BUSY_RECOVERY",
    517: "SQLITE_BUSY_SNAPSHOT",
    773: "SQLITE_BUSY_TIMEOUT",
    6: "SQLITE_LOCKED",
    262: "SQLITE_LOCKED_SHAREDCACHE",
    518: "SQLITE_LOCKED_VTAB",
}
_LOCK_MESSAGES = ("database is locked", "database table is locked", "database schema is locked")


#: how deep an exception chain is searched for the database error it wraps
_CHAIN_DEPTH = 8


def database_error(exc: BaseException) -> BaseException | None:
    """The ``sqlite3.Error`` (or PostgreSQL driver error) that ``exc`` is or wraps, else None.

    ORMs and task libraries raise their own exception types (Django's and SQLAlchemy's
    ``OperationalError`` are no ``sqlite3.Error``) with the driver's error as ``.orig``,
    ``__cause__`` (``raise ... from``) or ``__context__``: followed a few links deep.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    for _ in range(_CHAIN_DEPTH):
        if current is None or id(current) in seen:
            return None
        if isinstance(current, sqlite3.Error) or is_postgresql_error(current):
            return current
        seen.add(id(current))
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            current = orig
        elif current.__cause__ is not None or current.__suppress_context__:  # `raise ... from None`: not it
            current = current.__cause__
        else:
            current = current.__context__
    return None


def classify(exc: BaseException) -> str | None:
    """``'SQLITE_BUSY_SNAPSHOT'`` for a lock error (or an exception wrapping one), ``None`` for anything else."""
    found = database_error(exc)
    if found is None:
        return None
    if not isinstance(found, sqlite3.Error):  # PostgreSQL: by SQLSTATE ('40001 serialization_failure')
        return lock_error_name(found)
    exc = found
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        if code & 0xFF not in (SQLITE_BUSY, SQLITE_LOCKED):
            return None
        return getattr(exc, "sqlite_errorname", None) or _EXTENDED_NAMES.get(code, f"SQLITE_{code}")
    message = str(exc).lower()
    if message.startswith(_LOCK_MESSAGES[0]):
        return "SQLITE_BUSY"
    if message.startswith(_LOCK_MESSAGES[1:]):
        return "SQLITE_LOCKED"
    return None


@dataclass
class OpStats:
    """Counters for one kind of operation (``save_job``, ``queue_delete``, ...)."""

    operations: int = 0
    attempts: int = 0
    busy_events: int = 0
    retried_operations: int = 0
    successful_retries: int = 0
    exhausted: int = 0
    other_errors: int = 0
    #: busy errors that came back well before busy_timeout: a lock-upgrade or
    #: snapshot bug that no timeout cures, not plain contention
    fast_busy: int = 0
    busy_wait_seconds: float = 0.0
    codes: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "attempts": self.attempts,
            "busy_events": self.busy_events,
            "retried_operations": self.retried_operations,
            "successful_retries": self.successful_retries,
            "exhausted": self.exhausted,
            "other_errors": self.other_errors,
            "fast_busy": self.fast_busy,
            "busy_wait_seconds": round(self.busy_wait_seconds, 6),
            "codes": dict(self.codes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpStats:
        values = {k: v for k, v in data.items() if k != "codes"}
        return cls(**values, codes=Counter(data.get("codes", {})))

    def add(self, other: OpStats) -> None:
        self.operations += other.operations
        self.attempts += other.attempts
        self.busy_events += other.busy_events
        self.retried_operations += other.retried_operations
        self.successful_retries += other.successful_retries
        self.exhausted += other.exhausted
        self.other_errors += other.other_errors
        self.fast_busy += other.fast_busy
        self.busy_wait_seconds += other.busy_wait_seconds
        self.codes.update(other.codes)


def merge_stats(parts: list[dict[str, dict[str, Any]]]) -> dict[str, OpStats]:
    """Add up per-operation counters from many workers and producers."""
    total: dict[str, OpStats] = {}
    for part in parts:
        for op, data in part.items():
            total.setdefault(op, OpStats()).add(OpStats.from_dict(data))
    return total


class Retrier:
    """Runs operations, retrying lock errors with exponential backoff, counting everything.

    One Retrier belongs to one worker or producer (one thread), so its counters need no lock.
    """

    def __init__(
        self,
        attempts: int,
        backoff: float,
        *,
        busy_timeout_ms: int = 0,
        name: str = "WorkerPool",
        sleep: Callable[[float], None] = time.sleep,
        on_busy: Callable[[str], None] | None = None,
    ) -> None:
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.fast_threshold = busy_timeout_ms / 1000 * 0.1
        self.stats: dict[str, OpStats] = {}
        self._sleep = sleep
        self._on_busy = on_busy
        self._log = get_logger(name)

    def call(self, op: str, fn: Callable[[], T], subject: str = "", *,
             idle: Callable[[T], bool] | None = None) -> T:
        """``fn()``, retried on SQLITE_BUSY/LOCKED with exponential backoff, each attempt counted.

        What the observed connections did in an attempt is filed under ``op`` only when the
        attempt succeeded: a failed attempt's statements go to ``op (retried)``, and a successful
        one that ``idle(result)`` says found nothing to do (an empty receive) to ``op (empty)``,
        so the successful path's counts per job do not depend on timing.
        """
        instruments = active()
        attempt_label = op + ATTEMPT
        stats = self.stats.get(op)
        if stats is None:
            stats = self.stats[op] = OpStats()
        stats.operations += 1
        delay = self.backoff
        attempt = 1
        while True:
            stats.attempts += 1
            started = time.monotonic()
            forget_last_busy()
            try:
                with operation(attempt_label):
                    result = fn()
            except Exception as exc:
                if instruments is not None:
                    instruments.refile(attempt_label, op + RETRIED)
                if database_error(exc) is None:
                    raise  # not the database's: the caller's business, uncounted
                code = classify(exc)
                if code is None:
                    stats.other_errors += 1
                    raise
                waited = time.monotonic() - started
                stats.busy_events += 1
                stats.busy_wait_seconds += waited
                stats.codes[code] += 1
                # judged against the timeout the raising connection really had, when it was observed
                timeout_ms = last_busy_timeout_ms()
                threshold = self.fast_threshold if timeout_ms is None else timeout_ms / 1000 * 0.1
                if waited < threshold:
                    stats.fast_busy += 1
                if self._on_busy is not None:
                    self._on_busy(code)
                if attempt >= self.attempts:
                    stats.exhausted += 1
                    self._log.error("Database busy (%s) on %s %s, giving up after %d attempts",
                                    code, op, subject, attempt)
                    raise
                if attempt == 1:
                    stats.retried_operations += 1
                self._log.warning("Database busy (%s) on %s %s, retrying in %dms",
                                  code, op, subject, round(delay * 1000))
                self._sleep(delay)
                delay *= 2
                attempt += 1
                self._log.info("Retry attempt %d/%d for %s %s", attempt, self.attempts, op, subject)
                continue
            except BaseException:
                if instruments is not None:
                    instruments.refile(attempt_label, op + RETRIED)
                raise
            if instruments is not None:
                instruments.refile(attempt_label, op + IDLE if idle is not None and idle(result) else op)
            if attempt > 1:
                stats.successful_retries += 1
                self._log.info("Successfully completed %s %s after retry", op, subject)
            return result

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {op: stats.as_dict() for op, stats in self.stats.items()}


@contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolls back on any error so a retry starts clean.

    IMMEDIATE takes the write lock up front, inside the busy handler's wait; a plain
    (deferred) BEGIN that reads first must upgrade later and fails with BUSY or
    BUSY_SNAPSHOT at once when another writer got there first.
    """
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # COMMIT itself can meet a lock (rollback-journal mode); never leave it open.
        if conn.in_transaction:
            conn.rollback()
        raise
