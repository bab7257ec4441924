"""What a run's connections did, by operation: statements, write transactions, lock hold and wait.

:class:`~pytest_quaero.core.observed.ObservedConnection` (every connection
:func:`pytest_quaero.core.db.connect` opens) reports here. Everything is filed under
the operation the thread is doing (:func:`operation`, set by the retry wrapper and the
worker: ``queue_receive``, ``queue_delete``, ``handler``, ...; the harness's own thread
is ``harness``). The samples are per process; a spawned worker sends its
:meth:`Instruments.export` to the pool, which merges it.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ATTEMPT",
    "HARNESS_OPERATION",
    "IDLE",
    "RETRIED",
    "Instruments",
    "active",
    "base_operation",
    "current_operation",
    "forget_last_busy",
    "hidden_busy",
    "instrumenting",
    "last_busy_timeout_ms",
    "last_failure",
    "note_failure",
    "note_lock_error",
    "operation",
    "percentile",
]

HARNESS_OPERATION = "harness"
#: examples kept per kind of finding
_MAX_EXAMPLES = 10

_thread = threading.local()


class operation:
    """File every statement this thread runs inside the block under ``name``.

    A class, not a generator context manager: it runs on every retried call, several times a
    job, and a generator costs three times as much to enter and leave.
    """

    __slots__ = ("name", "previous")

    def __init__(self, name: str) -> None:
        self.name = name
        self.previous: str | None = None

    def __enter__(self) -> None:
        self.previous = getattr(_thread, "operation", None)
        _thread.operation = self.name
        _thread.serial = getattr(_thread, "serial", 0) + 1

    def __exit__(self, *exc_info: object) -> None:
        _thread.operation = self.previous


#: the label suffixes an operation's statements are filed under when they are not its successful path
RETRIED, IDLE = " (retried)", " (empty)"
#: an attempt in progress, refiled under its operation (or RETRIED, IDLE) when it ends
ATTEMPT = " (attempt)"


def base_operation(label: str) -> str:
    """``queue_receive (retried)`` -> ``queue_receive``."""
    for suffix in (RETRIED, IDLE, ATTEMPT):
        if label.endswith(suffix):
            return label[: -len(suffix)]
    return label


def operation_serial() -> int:
    """Changes each time this thread enters an operation: tells one attempt from the next of the same name."""
    serial: int = getattr(_thread, "serial", 0)
    return serial


def current_operation() -> str:
    return getattr(_thread, "operation", None) or "other"


def forget_last_busy() -> None:
    """Start an operation with no lock error (nor failed statement) on record in this thread."""
    _thread.busy_timeout_ms = None
    _thread.last_failure = None


def note_lock_error(busy_timeout_ms: int | None) -> None:
    """This thread's statement just met a lock, on a connection with this busy_timeout."""
    _thread.busy_timeout_ms = busy_timeout_ms


def note_failure(description: str) -> None:
    """This thread's statement just failed: which statement, on a connection with which pragmas."""
    _thread.last_failure = description


def last_failure() -> str | None:
    """The last statement that raised in this thread on an observed connection, with its pragmas."""
    value: str | None = getattr(_thread, "last_failure", None)
    return value


def last_busy_timeout_ms() -> int | None:
    """The busy_timeout (read back) of the connection that raised this thread's last lock error."""
    value: int | None = getattr(_thread, "busy_timeout_ms", None)
    return value


def hidden_busy(locks: dict[str, Any], retry: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Lock errors SQLite raised to the code under test that the retry counters never saw.

    Per operation: what the connections saw minus what reached the retry wrapper. A queue
    that catches "database is locked" and returns nothing, a library's own retry loop, a
    handler that swallows the error: each shows up here. The harness's own thread is left out.
    """
    seen: Counter[str] = Counter()
    for label, data in locks.get("operations", {}).items():
        op = base_operation(label)
        if op != HARNESS_OPERATION:
            seen[op] += int(data.get("busy_errors", 0))
    hidden: dict[str, int] = {}
    for op, count in seen.items():
        counted = int(retry.get(op, {}).get("busy_events", 0))
        if count > counted:
            hidden[op] = count - counted
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
    #: one-statement writes outside any transaction (goqite's receive, send, delete): write transactions too
    autocommit_writes: int = 0
    #: connections opened while this operation ran
    connections: int = 0

    def add(self, other: _OpTally) -> None:
        self.hold.extend(other.hold)
        self.wait.extend(other.wait)
        self.statements.update(other.statements)
        self.write_transactions += other.write_transactions
        self.rollbacks += other.rollbacks
        self.rows_changed += other.rows_changed
        self.busy.update(other.busy)
        self.autocommit_writes += other.autocommit_writes
        self.connections += other.connections

    def as_data(self) -> dict[str, Any]:
        return {"hold": self.hold, "wait": self.wait, "statements": dict(self.statements),
                "write_transactions": self.write_transactions, "rollbacks": self.rollbacks,
                "rows_changed": self.rows_changed, "busy": dict(self.busy),
                "autocommit_writes": self.autocommit_writes, "connections": self.connections}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> _OpTally:
        return cls(list(data["hold"]), list(data["wait"]), Counter(data["statements"]), data["write_transactions"],
                   data["rollbacks"], data["rows_changed"], Counter(data.get("busy", {})),
                   int(data.get("autocommit_writes", 0)), int(data.get("connections", 0)))


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
        #: the run's queue: the ledger's triggers see every queue in the goqite table, judge only this one
        self.queue_name = "quaero_jobs"
        #: row-level findings (:mod:`pytest_quaero.core.ledger`, the workers' checks): counts and a few examples
        self.notes: Counter[str] = Counter()
        self.note_examples: dict[str, list[str]] = {}
        #: (origin, busy_timeout_ms, journal_mode, synchronous) -> connections opened so
        self.configurations: Counter[tuple[str, int, str, str]] = Counter()

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
                total.setdefault(name, _OpTally()).add(tally)
        return total

    def refile(self, source: str, target: str) -> None:
        """Move what this thread filed under ``source`` to ``target`` (an attempt's statements, once
        it is known whether the attempt succeeded, was retried, or found nothing to do)."""
        shard: dict[str, _OpTally] | None = getattr(self._local, "shard", None)
        tally = shard.pop(source, None) if shard is not None else None
        if tally is not None:
            self._op(target).add(tally)

    def statement(self, op: str, kind: str, rows: int) -> None:
        tally = self._op(op)
        tally.statements[kind] += 1
        tally.rows_changed += rows

    def rows(self, op: str, count: int) -> None:
        self._op(op).rows_changed += count

    def transaction(self, op: str, hold: float | None, wait: float, rolled_back: bool) -> None:
        tally = self._op(op)
        if hold is not None:
            tally.hold.append(hold)
            tally.write_transactions += 1
        tally.wait.append(wait)
        tally.rollbacks += int(rolled_back)

    def wait(self, op: str, seconds: float) -> None:
        """An autocommit write: its time is wait (and hold) at once, and it is a write transaction."""
        tally = self._op(op)
        tally.wait.append(seconds)
        tally.autocommit_writes += 1

    def busy(self, op: str, code: str) -> None:
        self._op(op).busy[code] += 1

    def note(self, kind: str, example: str | None = None) -> None:
        """One finding of ``kind`` (``ack_wrong_id``, ``stall_lock_held``, ...), with an example to name."""
        with self._lock:
            self.notes[kind] += 1
            if example is not None:
                examples = self.note_examples.setdefault(kind, [])
                if len(examples) < _MAX_EXAMPLES:
                    examples.append(example)

    def findings(self) -> dict[str, dict[str, Any]]:
        """Every kind of finding: ``{"count": n, "examples": [...]}``."""
        with self._lock:
            return {kind: {"count": count, "examples": list(self.note_examples.get(kind, []))}
                    for kind, count in sorted(self.notes.items())}

    def opened(self, op: str = "other") -> None:
        with self._lock:
            self.connections += 1
        self._op(op).connections += 1

    def configured(self, origin: str, configuration: tuple[int, str, str]) -> None:
        """A connection of ``origin`` (plugin, setup, user) runs with these pragmas, read back from it."""
        with self._lock:
            timeout, journal, synchronous = configuration
            self.configurations[(origin, timeout, journal, synchronous)] += 1

    def connection_summary(self) -> dict[str, Any]:
        """How many connections, from where, with which pragmas (each distinct configuration once)."""
        with self._lock:
            configurations = dict(self.configurations)
            opened = self.connections
        by_origin: Counter[str] = Counter()
        grouped: dict[tuple[int, str, str], Counter[str]] = {}
        for (origin, timeout, journal, synchronous), count in configurations.items():
            by_origin[origin] += count
            grouped.setdefault((timeout, journal, synchronous), Counter())[origin] += count
        return {
            "opened": opened,
            "by_origin": dict(by_origin),
            "configurations": [
                {"busy_timeout_ms": timeout, "journal_mode": journal, "synchronous": synchronous,
                 "connections": sum(origins.values()), "origins": dict(origins)}
                for (timeout, journal, synchronous), origins in sorted(grouped.items())
            ],
        }

    # --- across processes

    def export(self) -> dict[str, Any]:
        """Raw samples, to merge in another process (see :meth:`merge`)."""
        with self._lock:
            notes, examples = dict(self.notes), {kind: list(found) for kind, found in self.note_examples.items()}
        return {"connections": self.connections, "notes": notes, "note_examples": examples,
                "configurations": [[*key, count] for key, count in self.configurations.items()],
                "ops": {name: tally.as_data() for name, tally in self.ops.items()}}

    def merge(self, exported: dict[str, Any]) -> None:
        """Add another process's :meth:`export` (as a shard of its own)."""
        shard: dict[str, _OpTally] = {}
        for name, data in exported.get("ops", {}).items():
            shard[name] = _OpTally.from_data(data)
        with self._lock:
            self.connections += int(exported.get("connections", 0))
            self.notes.update(exported.get("notes", {}))
            for kind, found in exported.get("note_examples", {}).items():
                examples = self.note_examples.setdefault(kind, [])
                examples.extend(found[: max(0, _MAX_EXAMPLES - len(examples))])
            for *key, count in exported.get("configurations", []):
                self.configurations[(str(key[0]), int(key[1]), str(key[2]), str(key[3]))] += int(count)
            self._shards.append(shard)

    # --- for the result

    def summary(self) -> dict[str, Any]:
        """Per operation and in total: hold and wait p50/p95/max (ms), statements, transactions, rows."""
        merged: dict[str, _OpTally] = {}
        for name, tally in self.ops.items():
            # a transaction an attempt began and another operation ended is the attempt's operation's
            label = base_operation(name) if name.endswith(ATTEMPT) else name
            merged.setdefault(label, _OpTally()).add(tally)
        ops = {name: _describe(t) for name, t in sorted(merged.items())}
        everything = _OpTally()
        for tally in merged.values():
            everything.add(tally)
        total = _describe(everything)
        return {"connections": self.connections, "total": total, "operations": ops}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _spread(samples: list[float]) -> dict[str, float]:
    return {"p50": _ms(percentile(samples, 0.5)), "p95": _ms(percentile(samples, 0.95)),
            "p99": _ms(percentile(samples, 0.99)),
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
        "autocommit_writes": tally.autocommit_writes,
        "connections": tally.connections,
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


