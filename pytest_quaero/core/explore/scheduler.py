"""One token passed between real threads: exactly one explored worker runs at a time.

Every statement an explored thread runs on an observed connection (execute, executemany,
executescript, commit, rollback, close, on the connection or a cursor) is a scheduling
point (:data:`pytest_quaero.core.observed.SCHEDULER` routes it here): the thread gives
the token back, the strategy picks who runs next, and only that thread goes on. The
order of statements is therefore the strategy's, whatever the machine does, and a
replay token (:mod:`~pytest_quaero.core.explore.strategies`) repeats it exactly.

Locks: explored connections run with busy_timeout 0. A ``database is locked`` that
SQLite's busy handler would have waited out (BEGIN IMMEDIATE, an autocommit write or a
COMMIT meeting another writer) parks the thread until some transaction ends, then the
statement runs again: the schedule, not the clock, decides who waits. A lock error SQLite
returns without waiting (BUSY_SNAPSHOT, or a deferred transaction's read-then-write
upgrade while another connection writes) reaches the code under test as in production.
When every thread is parked, the strategy picks one to get its BUSY, as if its
busy_timeout expired.

Waits: a thread waiting on the pool's stop or cancel signal (a poll after an empty
receive, the simulated work) sleeps on the schedule's clock (:mod:`.clock`): when no
thread can run, the clock jumps to the earliest wake-up. When every thread sleeps and
each has already woken once since the database last changed, the schedule is idle: the
clock jumps past the visibility timeout once (a message whose worker failed comes back);
idle again with no change, the schedule is over and the threads are released to run
freely to their end (busy_timeout restored, the clock running at the machine's pace).

Known limits: a wait outside SQL and the pool's signals (a Python lock, an event, a sleep,
an HTTP call waiting on another worker) is no scheduling point; the watchdog turns the
stall it causes into one error naming the thread and its stack. Threads other than the
run's producers and workers (the harness's monitor) run freely beside the schedule.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_quaero.core.errors import RunError
from pytest_quaero.core.explore.clock import STEP, VirtualClock, bind, install
from pytest_quaero.core.explore.strategies import Strategy
from pytest_quaero.core.explore.trace import Trace, statement_text
from pytest_quaero.core.instruments import HARNESS_OPERATION, current_operation

__all__ = ["WATCHDOG_SECONDS", "ExplorationError", "Scheduler"]

#: how long a running thread may go without reaching a scheduling point (seconds)
WATCHDOG_SECONDS = 10.0
#: decisions after which a schedule stops being explored (a livelock runs on freely, and its deadline judges it)
MAX_DECISIONS = 20_000
_SLICE = 0.02  # how often a waiting thread looks at the watchdog and at a holder that died
_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
_RAW_EXECUTE = sqlite3.Connection.execute
_FOREVER = 1e12


class ExplorationError(RunError):
    """The exploration could not go on (the watchdog fired): one sentence, with the thread's stack."""


@dataclass(eq=False)
class _Participant:
    name: str
    display: str
    turn: threading.Condition
    state: str = "absent"  # absent, ready, blocked, sleeping, done
    ident: int | None = None
    wake: float = 0.0
    blocked_epoch: int = 0
    timed_out: bool = False
    sleep_version: int = -1
    previous_sleep_version: int = -2

    def idle(self, version: int) -> bool:
        """Asleep again with nothing changed since its last sleep: it woke, found nothing to do."""
        return self.state == "sleeping" and self.sleep_version == self.previous_sleep_version == version


class _ExitSignal:
    """Kept in a thread's locals: the thread's end drops it, which tells the scheduler at once."""

    def __init__(self, scheduler: Scheduler, participant: _Participant) -> None:
        weakref.finalize(self, scheduler.exited, participant)


class Scheduler:
    """The token, the participants, the trace of one schedule (see the module doc)."""

    def __init__(self, strategy: Strategy, participants: Sequence[str], *, displays: dict[str, str] | None = None,
                 clock: VirtualClock | None = None, watchdog: float = WATCHDOG_SECONDS,
                 visibility_timeout: float = 300.0, max_decisions: int = MAX_DECISIONS) -> None:
        self.strategy = strategy
        self.clock = clock or VirtualClock()
        self.trace = Trace()
        self.watchdog, self.visibility_timeout, self.max_decisions = watchdog, visibility_timeout, max_decisions
        names = displays or {}
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        # each thread waits for its turn on a condition of its own: a hand-over wakes one thread, not all
        self._parts = {name: _Participant(name, names.get(name, name), turn=threading.Condition(lock))
                       for name in participants}
        self._by_ident: dict[int, _Participant] = {}
        self._local = threading.local()
        self.holder: str | None = None
        self.started = self.released = False
        #: why the exploration stopped early (the watchdog), for the run to raise
        self.failure: str | None = None
        self.write_version = self.epoch = 0
        self._jumped_version = -1
        self._progress = time.monotonic()
        self.statements = 0
        self.ended = ""
        self._drawn = 0

    # ------------------------------------------------------------------ who is explored

    def _me(self) -> _Participant | None:
        """The calling thread's participant (arriving at its first point), or None when it is not explored."""
        part = self._by_ident.get(threading.get_ident())
        if part is not None or self.released:
            return part
        part = self._parts.get(threading.current_thread().name)
        if part is None or part.state != "absent":
            return None
        with self._cond:
            part.ident = threading.get_ident()
            part.state = "ready"
            self._by_ident[part.ident] = part
            self._local.exit_signal = _ExitSignal(self, part)
            bind(self.clock)
            if all(p.state != "absent" for p in self._parts.values()):
                self.started = True  # everyone is here: the first decision, the same in every replay
                self._hand_over(self._next(None))
            self._wait_turn(part)
        return part

    def exploring_here(self) -> bool:
        """True on an explored thread while the schedule is explored (the pool's stop is not set for it)."""
        return not self.released and threading.get_ident() in self._by_ident

    # ------------------------------------------------------------------ scheduling points

    def statement(self, conn: sqlite3.Connection, sql: str, method: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Run one statement as a scheduling point (called by the observed connection)."""
        part = self._me()
        if part is None or self.released or current_operation() == HARNESS_OPERATION:
            if self.released:
                _restore(conn)
            return method(*args)
        keyword, immediate, sets_timeout = _parsed(sql)
        self._explore(conn)
        with self._cond:
            if conn.total_changes != getattr(conn, "_quaero_seen", conn.total_changes):
                self.write_version += 1  # rows an UPDATE ... RETURNING wrote as its rows were fetched
            self.clock.advance(STEP)
            self._progress = time.monotonic()
            self._hand_over(self._next(part))
            self._wait_turn(part)
        parameters = args[2] if len(args) > 2 and not isinstance(args[2], str) else None
        what = statement_text(sql)
        before = conn.total_changes
        snapshot = getattr(conn, "_quaero_tx", "none") in ("begun", "read") and keyword in _WRITES
        while True:
            try:
                result = method(*args)
            except sqlite3.OperationalError as exc:
                if not self.released and _waitable(exc, snapshot):
                    self._step(part, what, parameters, "BUSY: waits until a transaction ends")
                    if self._block(part):
                        continue
                    self._step(part, what, parameters, f"{_code(exc)} (every worker waits: its busy_timeout expired)")
                else:
                    self._step(part, what, parameters, f"{_code(exc)}: {exc}")
                self._after(conn, keyword, before, ok=False, immediate=immediate)
                raise
            except sqlite3.Error as exc:
                self._step(part, what, parameters, f"{type(exc).__name__}: {exc}")
                self._after(conn, keyword, before, ok=False, immediate=immediate)
                raise
            break
        changed = self._after(conn, keyword, before, ok=True, immediate=immediate)
        self._step(part, what, parameters, f"ok, {changed} changed" if changed else "ok")
        if sets_timeout:
            _zero_busy_timeout(conn)  # the code set its own: remembered, and kept at 0 while explored
        return result

    def _step(self, part: _Participant, what: str, parameters: Any, result: str) -> None:
        if not self.released:
            self.trace.add(part.display, what, parameters, result)

    def _after(self, conn: sqlite3.Connection, keyword: str, before: int, *, ok: bool, immediate: bool) -> int:
        """Note what the statement did: rows changed, the transaction it left, and who it unblocks."""
        self.statements += 1
        try:
            changed = conn.total_changes - before
            in_transaction = conn.in_transaction
            conn._quaero_seen = conn.total_changes  # type: ignore[attr-defined]
        except sqlite3.ProgrammingError:  # closed
            changed, in_transaction = 0, False
        if not in_transaction:
            state = "none"
        elif keyword == "BEGIN":
            state = "write" if immediate else "begun"
        elif ok and keyword in _WRITES:
            state = "write"
        else:
            state = getattr(conn, "_quaero_tx", "none")
            state = "read" if state in ("begun", "none") else state
        conn._quaero_tx = state  # type: ignore[attr-defined]
        with self._cond:
            if changed:  # rows written (a read-only transaction's COMMIT changes nothing: idle polls stay idle)
                self.write_version += 1
            if not in_transaction:
                self.epoch += 1
                for other in self._parts.values():
                    if other.state == "blocked" and other.blocked_epoch < self.epoch:
                        other.state = "ready"
        return changed

    def _explore(self, conn: sqlite3.Connection) -> None:
        """A connection's first explored statement: busy_timeout 0 (the old one kept), the schedule's clock,
        and SQLite's random functions drawn in schedule order (goqite's message ids are the same in a replay)."""
        if getattr(conn, "_quaero_busy_timeout", None) is None:
            _zero_busy_timeout(conn)
            install(conn, self.clock)
            conn.create_function("randomblob", 1, self._random_bytes)
            conn.create_function("random", 0, lambda: int.from_bytes(self._random_bytes(8), "big", signed=True))

    def _random_bytes(self, size: Any) -> bytes:
        self._drawn += 1
        block = hashlib.sha256(f"quaero-explore:{self._drawn}".encode()).digest()
        count = max(1, int(size)) if isinstance(size, (int, float)) else 1
        return (block * (count // len(block) + 1))[:count]

    def sleep(self, seconds: float | None) -> bool:
        """Sleep ``seconds`` on the schedule's clock; False when the caller is not explored (it waits for real)."""
        part = self._me()
        if part is None or self.released:
            return False
        if seconds is not None and seconds <= 0:
            return True
        with self._cond:
            part.state = "sleeping"
            part.wake = self.clock.now() + (seconds if seconds is not None else _FOREVER)
            part.previous_sleep_version, part.sleep_version = part.sleep_version, self.write_version
            self._hand_over(self._next(None))
            self._wait_turn(part)
        return True

    def _block(self, part: _Participant) -> bool:
        """Park ``part`` on a lock until a transaction ends: True to run the statement again, False to fail it."""
        with self._cond:
            part.state, part.blocked_epoch, part.timed_out = "blocked", self.epoch, False
            self._hand_over(self._next(None))
            self._wait_turn(part)
            if self.released:
                return True  # the rest runs freely, with its busy_timeout back
            expired, part.timed_out = part.timed_out, False
            return not expired

    def exited(self, part: _Participant) -> None:
        """``part``'s thread ended (it may have held the token)."""
        with self._cond:
            if part.state == "done":
                return
            part.state = "done"
            if self.holder == part.name and not self.released:
                self._hand_over(self._next(None))

    # ------------------------------------------------------------------ decisions

    def _next(self, current: _Participant | None) -> str | None:
        """Who runs next (None: the schedule is over); ``current`` is the caller, able to go on."""
        while True:
            if len(self.strategy.decisions) >= self.max_decisions:
                self.ended = f"stopped exploring after {self.max_decisions} decisions"
                return None
            now = self.clock.now()
            for part in self._parts.values():
                if part.state == "sleeping" and part.wake <= now:
                    part.state = "ready"
            enabled = sorted(p.name for p in self._parts.values() if p.state == "ready")
            if enabled:
                return self.strategy.choose(enabled, current.name if current is not None else None)
            live = [p for p in self._parts.values() if p.state in ("sleeping", "blocked")]
            sleepers = [p for p in live if p.state == "sleeping"]
            if sleepers and all(p.idle(self.write_version) for p in live):
                if self._jumped_version == self.write_version:
                    self.ended = "every worker idle, nothing left to do"
                    return None
                # a message whose worker gave up comes back after the visibility timeout
                self._jumped_version = self.write_version
                self.clock.advance(self.visibility_timeout)
                self.trace.add("clock", f"every worker idle: +{self.visibility_timeout:g}s (visibility timeout)")
                for part in sleepers:
                    part.wake = min(part.wake, self.clock.now())
                continue
            if sleepers:
                self.clock.set(min(p.wake for p in sleepers))
                continue
            blocked = sorted(p.name for p in live)
            if not blocked:
                self.ended = "every worker finished"
                return None
            victim = self.strategy.choose(blocked, None)
            self._parts[victim].timed_out = True
            self._parts[victim].state = "ready"
            return victim

    def _hand_over(self, name: str | None) -> None:
        if name is None:
            self.release()
            return
        self.holder = name
        self._progress = time.monotonic()
        self._parts[name].turn.notify()

    def _wait_turn(self, part: _Participant) -> None:
        while not self.released and (not self.started or self.holder != part.name):
            if not part.turn.wait(_SLICE):
                self._check()
        part.state = "ready" if part.state != "done" else part.state

    def _check(self) -> None:
        """The watchdog, and a holder whose thread died without saying so."""
        if self.released:
            return
        waited = time.monotonic() - self._progress
        if not self.started:
            if waited > self.watchdog:
                absent = ", ".join(p.display for p in self._parts.values() if p.state == "absent")
                self.failure = (f"{absent} never reached a scheduling point within {self.watchdog:g}s of the others "
                                "(a worker or producer that runs no SQL cannot be explored)")
                self.release()
            return
        holder = self._parts.get(self.holder or "")
        if holder is None:
            return
        thread = next((t for t in threading.enumerate() if t.ident == holder.ident), None)
        if thread is None and holder.state != "done":
            holder.state = "done"
            self._hand_over(self._next(None))
        elif waited > self.watchdog:
            frames = sys._current_frames().get(holder.ident or 0)
            stack = "".join(traceback.format_stack(frames)[-8:]) if frames is not None else "  (no stack)\n"
            self.failure = (f"{holder.display} reached no scheduling point (a statement, a commit, a close, a wait on "
                            f"the pool's stop) within {self.watchdog:g}s while every other worker waited for it: it "
                            "waits on something outside SQL (a Python lock, an event, a sleep, a network call) that "
                            f"another worker, parked by the schedule, must release. It is blocked at:\n{stack}")
            self.trace.add("watchdog", f"{holder.display} blocked outside SQL for {self.watchdog:g}s")
            self.release()

    def release(self) -> None:
        """The schedule is over (or given up): every thread runs freely from here."""
        with self._cond:
            if self.released:
                return
            self.released = True
            self.clock.release()
            for part in self._parts.values():
                part.turn.notify_all()

    def abort(self, why: str) -> None:
        """The run was cancelled (Ctrl-C, its deadline): stop exploring, let every thread go."""
        if not self.released:
            self.ended = self.ended or why
            self.release()


_PARSED: dict[str, tuple[str, bool, bool]] = {}


def _parsed(sql: str) -> tuple[str, bool, bool]:
    """(first keyword, takes the write lock at BEGIN, sets busy_timeout); cached, as a run repeats its SQL."""
    found = _PARSED.get(sql)
    if found is None:
        words = sql.lstrip()[:24].upper().split(maxsplit=2)
        keyword = words[0] if words else ""
        found = (keyword, keyword == "BEGIN" and len(words) > 1 and words[1] in ("IMMEDIATE", "EXCLUSIVE"),
                 keyword == "PRAGMA" and "busy_timeout" in sql.lower() and "=" in sql)
        if len(_PARSED) < 4096:  # SQL built per call must not grow this forever
            _PARSED[sql] = found
    return found


def _code(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "database is locked")


def _waitable(exc: sqlite3.OperationalError, snapshot: bool) -> bool:
    """A lock error SQLite's busy handler would have waited out (with a busy_timeout)."""
    code = getattr(exc, "sqlite_errorcode", None)
    # SQLITE_BUSY (5) only: BUSY_SNAPSHOT (517) and the LOCKED family never wait
    busy = str(exc).lower().startswith("database is locked") if code is None else code == 5
    # a write in a transaction that already read: SQLite skips the busy handler (a deadlock otherwise)
    return busy and not snapshot


def _zero_busy_timeout(conn: sqlite3.Connection) -> None:
    row = _RAW_EXECUTE(conn, "PRAGMA busy_timeout").fetchone()
    conn._quaero_busy_timeout = int(row[0]) if row else 0  # type: ignore[attr-defined]
    _RAW_EXECUTE(conn, "PRAGMA busy_timeout = 0")


def _restore(conn: sqlite3.Connection) -> None:
    timeout = getattr(conn, "_quaero_busy_timeout", None)
    if timeout is not None and timeout >= 0:
        conn._quaero_busy_timeout = -1  # type: ignore[attr-defined]
        with contextlib.suppress(sqlite3.Error):
            _RAW_EXECUTE(conn, f"PRAGMA busy_timeout = {int(timeout)}")
