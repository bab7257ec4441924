"""Every SQLite connection a run opens, seen in one place.

:func:`pytest_quaero.core.db.connect` reports each connection it opens here (the
plugin's own, and a user's through the public :func:`pytest_quaero.connect`), with
the pragmas read back from it. While a run is observed (:func:`observing`), the
log counts them per origin and per distinct configuration, and the run puts that
summary on its result (``result.extra["connections"]``), so a handler or library
connection running with another busy_timeout shows up in the reports.

The log is per process: connections opened inside spawned worker processes are
not gathered yet (thread mode, producers and the monitor are).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConnectionLog", "is_observing", "observing", "record"]


@dataclass
class ConnectionLog:
    """Connections opened during one run, counted by origin and by configuration."""

    by_origin: dict[str, int] = field(default_factory=dict)
    #: (busy_timeout_ms, journal_mode, synchronous) -> {origin: count}
    configurations: dict[tuple[int, str, str], dict[str, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, origin: str, busy_timeout_ms: int, journal_mode: str, synchronous: str) -> None:
        with self._lock:
            self.by_origin[origin] = self.by_origin.get(origin, 0) + 1
            seen = self.configurations.setdefault((busy_timeout_ms, journal_mode, synchronous), {})
            seen[origin] = seen.get(origin, 0) + 1

    def summary(self) -> dict[str, Any]:
        """Plain data for the result: how many connections, from where, with which pragmas."""
        with self._lock:
            return {
                "opened": sum(self.by_origin.values()),
                "by_origin": dict(self.by_origin),
                "configurations": [
                    {"busy_timeout_ms": timeout, "journal_mode": journal, "synchronous": synchronous,
                     "connections": sum(origins.values()), "origins": dict(origins)}
                    for (timeout, journal, synchronous), origins in sorted(self.configurations.items())
                ],
            }


class _Current:
    """The log of the run in progress in this process (one run at a time per process)."""

    def __init__(self) -> None:
        self.log: ConnectionLog | None = None


_current = _Current()


@contextmanager
def observing() -> Iterator[ConnectionLog]:
    """Observe every connection opened in this process until the block ends."""
    log = ConnectionLog()
    previous, _current.log = _current.log, log
    try:
        yield log
    finally:
        _current.log = previous


def is_observing() -> bool:
    return _current.log is not None


def record(origin: str, busy_timeout_ms: int, journal_mode: str, synchronous: str) -> None:
    """Count one opened connection in the current run's log (no-op outside a run)."""
    log = _current.log
    if log is not None:
        log.add(origin, busy_timeout_ms, journal_mode, synchronous)
