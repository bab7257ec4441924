"""The explored schedule's clock: time moves with the schedule, not with the machine.

Under exploration every explored connection reads this clock wherever its SQL says
``'now'`` (``strftime(..., 'now')``, ``julianday('now')``, ``datetime()``...: SQLite lets
a connection replace its built-in date functions, so goqite's visibility timeouts, the
store's timestamps and a trigger's ``updated`` column all read it, whoever wrote the SQL).
It starts at the same instant in every schedule (2030-01-01 UTC), moves 1 ms at each
scheduling point, and jumps forward when every worker sleeps (to the earliest wake-up),
so timestamps, message order and visibility timeouts are the same in a replay.

Code under test that reads the time itself should read :func:`now` (``pytest_quaero.now``):
the schedule's clock on an explored worker, ``time.time()`` anywhere else.

``CURRENT_TIMESTAMP`` (a keyword, not a function) cannot be replaced: it keeps the machine's time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

__all__ = ["EPOCH", "STEP", "VirtualClock", "install", "now"]

#: where every schedule's clock starts: 2030-01-01T00:00:00Z
EPOCH = 1_893_456_000.0
#: how far the clock moves at each scheduling point (seconds)
STEP = 0.001

_GOQITE_FORMAT = "%Y-%m-%dT%H:%M:%fZ"
_RAW_EXECUTE = sqlite3.Connection.execute
_thread = threading.local()
_helpers = threading.local()


class VirtualClock:
    """Seconds since 1970, moved by the scheduler; after :meth:`release`, by the machine's clock."""

    def __init__(self, start: float = EPOCH) -> None:
        self._now = start
        self._released_at: float | None = None

    def now(self) -> float:
        if self._released_at is None:
            return self._now
        return self._now + (time.monotonic() - self._released_at)

    def advance(self, seconds: float) -> None:
        if self._released_at is None and seconds > 0:
            self._now += seconds

    def set(self, when: float) -> None:
        """Move to ``when`` (never backwards)."""
        if self._released_at is None and when > self._now:
            self._now = when

    def release(self) -> None:
        """The schedule is over: from here the clock runs at the machine's pace, without a jump."""
        if self._released_at is None:
            self._released_at = time.monotonic()

    def text(self) -> str:
        """The time as SQLite's ``'now'`` would be, ``YYYY-MM-DD HH:MM:SS.SSS`` (UTC)."""
        moment = self.now()
        whole = int(moment)
        millis = round((moment - whole) * 1000)
        if millis == 1000:
            whole, millis = whole + 1, 0
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole)) + f".{millis:03d}"


def bind(clock: VirtualClock | None) -> None:
    """Make ``clock`` what :func:`now` reads in this thread (None: the machine's)."""
    _thread.clock = clock


def now() -> float:
    """Seconds since 1970 by the explored schedule's clock on an explored worker, else ``time.time()``."""
    clock: VirtualClock | None = getattr(_thread, "clock", None)
    return time.time() if clock is None else clock.now()


def _helper() -> sqlite3.Connection:
    # SQLite's own date arithmetic, per thread: the explored connection's functions are replaced
    conn: sqlite3.Connection | None = getattr(_helpers, "conn", None)
    if conn is None:
        conn = _helpers.conn = sqlite3.connect(":memory:")
    return conn


def _is_now(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == "now"


def _function(name: str, clock: VirtualClock, first_time: int) -> Any:
    """SQLite's ``name`` with a ``'now'`` argument (or none at all) read from ``clock``."""

    def call(*given: Any) -> Any:
        args = list(given)
        if len(args) <= first_time:
            args.append(clock.text())
        elif _is_now(args[first_time]):
            if name == "strftime" and len(args) == 2 and args[0] == _GOQITE_FORMAT:
                return clock.text().replace(" ", "T") + "Z"  # goqite's NOW: every receive reads it
            args[first_time] = clock.text()
        marks = ", ".join("?" * len(args))
        # sqlite3.Connection's own execute: the helper is no explored connection, whatever connect() made it
        return _RAW_EXECUTE(_helper(), f"select {name}({marks})", args).fetchone()[0]

    return call


_FUNCTIONS = {"strftime": 1, "julianday": 0, "datetime": 0, "date": 0, "time": 0, "unixepoch": 0}
_MAX_MODIFIERS = 4


def install(conn: sqlite3.Connection, clock: VirtualClock) -> None:
    """Replace ``conn``'s date functions so ``'now'`` is ``clock``'s time (see the module doc)."""
    for name, first_time in _FUNCTIONS.items():
        function = _function(name, clock, first_time)
        for arity in range(first_time, first_time + 2 + _MAX_MODIFIERS):
            conn.create_function(name, arity, function)
