"""How each fault is made real: a worker killed mid-job, a producer killed mid-parent, a pool restart.

* **kill-worker**, process mode: the worker process is killed with SIGKILL while its job
  is held in flight (the job's handler, :class:`FaultHandler`, waits up to ``hold`` to be
  killed). SQLite releases the dead process's locks and discards its uncommitted frames;
  the message comes back after the visibility timeout and another worker completes it.
  Thread mode cannot kill a thread, so the worker's thread dies instead: the handler
  raises :class:`WorkerKilled` (a ``BaseException``, which nothing in the worker catches).
  Either way the message is redelivered only after ``--quaero-visibility-timeout``, so
  use a short one (e.g. ``5s``) with this fault.
* **kill-producer**: producers are threads of the run, so the kill is simulated where it
  hurts (:class:`FaultEndpointFactory`): :class:`ProducerKilled` is raised between the
  child row's INSERT and its message's INSERT, inside their shared transaction, which
  rolls back exactly as SQLite discards a killed process's uncommitted frames. The dead
  producer's connection is closed; a supervisor restarts the producer on a new
  connection, which walks the parent from the start: what was committed must still be
  there, the killed child must not be (half-committed), and everything missing is
  created once.
* **restart-pool**: a graceful restart, as a deploy does it (:class:`FaultPool`).

The :class:`~pytest_quaero.core.faults.FaultPlan` wraps the run's handler, endpoint
factory and pool with these, and decides when each fault fires.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from pytest_quaero.core import integrity
from pytest_quaero.core.jobs import Handler, Job, JobContext
from pytest_quaero.core.pool import WorkerPool
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.worker import Endpoint, EndpointFactory, Event

__all__ = [
    "FaultEndpointFactory",
    "FaultHandler",
    "FaultPool",
    "ProducerKill",
    "ProducerKilled",
    "WorkerKilled",
]


class WorkerKilled(BaseException):
    """Ends a worker thread mid-job (thread mode's stand-in for SIGKILL); nothing catches it."""

    #: a death --quaero-faults asked for: judged by fault_recovery, not counted against Worker Health
    injected_fault = True


class ProducerKilled(Exception):
    """Ends a producer inside a child's transaction, after some children were committed."""


# ------------------------------------------------------------------ the handler (runs in workers)


@dataclass
class FaultHandler:
    """Wraps the job handler so an armed kill finds a worker mid-job. Picklable (process mode)."""

    inner: Handler
    control_dir: str
    hold: float = 30.0

    def __call__(self, job: Job, context: JobContext) -> None:
        arm = os.path.join(self.control_dir, "arm-kill-worker")
        if os.path.exists(arm):
            token = f"{os.getpid()}-{threading.get_ident()}"
            claimed = os.path.join(self.control_dir, f"claimed-{token}")
            try:
                os.rename(arm, claimed)  # atomic: exactly one worker wins the arm
            except FileNotFoundError:
                pass
            else:
                self._held(job, context, token)
        self.inner(job, context)

    def _held(self, job: Job, context: JobContext, token: str) -> None:
        tmp = os.path.join(self.control_dir, f".held-{token}")
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n{job.job_id}\n{context.worker}\n")
        os.replace(tmp, os.path.join(self.control_dir, f"held-{token}"))
        kill = os.path.join(self.control_dir, f"kill-{token}")
        deadline = time.monotonic() + self.hold
        while time.monotonic() < deadline:  # in process mode SIGKILL ends this wait
            if os.path.exists(kill):
                raise WorkerKilled(f"{context.worker} killed mid-job {job.job_id}")
            time.sleep(0.005)


# ------------------------------------------------------------------ the producer (runs in the run's threads)


@dataclass
class ProducerKill:
    """What the dying producer did, shared between its endpoint and the plan (same process)."""

    parent: int
    after: int | None
    killed_at: float | None = None
    killed_child: str = ""
    parent_id: str = ""
    #: children committed before the kill, and how many of them the restart found intact
    committed: int = 0
    survived: int = 0
    #: the killed child's row after the kill: absent means its transaction rolled back
    rolled_back: bool | None = None
    resumed: int = 0
    restarted_at: float | None = None


class _Supervised:
    """One producer's connection, replaced by a fresh one when the producer is killed."""

    def __init__(self, factory: EndpointFactory, db_path: str, settings: Settings,
                 kill: ProducerKill, children: int) -> None:
        self.factory, self.db_path, self.settings = factory, db_path, settings
        self.kill = kill
        self.after = kill.after if kill.after is not None else children // 2
        self.current = factory(db_path, settings)

    def restart(self) -> None:
        """The supervisor: the dead producer's connection goes, a new producer replays the parent."""
        kill = self.kill
        with contextlib.suppress(sqlite3.Error):
            self.current.close()  # a dead process's connection is gone with it
        self.current = self.factory(self.db_path, self.settings)
        kill.restarted_at = time.monotonic()
        store = self.current.store
        run_id, _, parent = kill.parent_id.rpartition("-parent-")
        # A restarted producer does not know where it died: it walks its parent from the start.
        kill.survived = sum(
            1 for c in range(1, kill.committed + 1) if store.get(integrity.child_id(run_id, int(parent), c)) is not None
        )
        kill.rolled_back = store.get(kill.killed_child) is None


class _DyingStore:
    """The store a supervised producer sees: its ``after+1``-th child's transaction never commits."""

    def __init__(self, supervised: _Supervised) -> None:
        self._sup = supervised

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sup.current.store, name)

    def save_parent(self, job_id: str, name: str, total: int) -> None:
        self._sup.current.store.save_parent(job_id, name, total)
        self._sup.kill.parent_id = job_id

    def create_child(self, job_id: str, parent_id: str, url: str, name: str = "",
                     enqueue: Callable[[], Any] | None = None) -> None:
        sup, kill = self._sup, self._sup.kill
        if kill.killed_at is None and kill.committed >= sup.after:
            def die() -> None:
                # The child row is written, its message is not: the worst moment to die.
                kill.killed_at = time.monotonic()
                kill.killed_child = job_id
                raise ProducerKilled(f"producer of {parent_id} killed inside the transaction of {job_id}")

            try:
                sup.current.store.create_child(job_id, parent_id, url, name, enqueue=die)
            except ProducerKilled:
                sup.restart()
        if kill.killed_at is None:
            sup.current.store.create_child(job_id, parent_id, url, name, enqueue=enqueue)
            kill.committed += 1
            return
        # The restarted producer: create what is missing, never anything twice.
        if sup.current.store.get(job_id) is not None:
            return
        sup.current.store.create_child(job_id, parent_id, url, name, enqueue=enqueue)
        kill.resumed += 1


class _CurrentQueue:
    """The queue on the supervised producer's current connection (messages share the child's transaction)."""

    def __init__(self, supervised: _Supervised) -> None:
        self._sup = supervised

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sup.current.queue, name)


@dataclass
class FaultEndpointFactory:
    """Wraps the endpoint factory: the chosen producer dies mid-parent and is restarted.

    The producer's thread lives on as the restarted producer (a supervisor would start a
    new process; here the dead one's connection is closed and a new one opened), so the
    run counts every job exactly as it was created. Picklable: in a worker process it
    only delegates, because producers are threads of the run.
    """

    inner: EndpointFactory
    parent: int
    after: int | None
    children: int
    #: what the dying producer did, read by the plan once the run is over
    kill: ProducerKill | None = None

    def __post_init__(self) -> None:
        self.kill = ProducerKill(self.parent, self.after)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["kill"] = None  # a worker process never produces
        return state

    @property
    def prepare_database(self) -> Any:
        """The wrapped factory's setup hook (pytest_quaero_prepare_database), still run once."""
        return getattr(self.inner, "prepare_database", None)

    @property
    def watch_queue(self) -> bool:
        """A user's queue is watched through its own counts() under a fault run too."""
        return bool(getattr(self.inner, "watch_queue", False))

    def __call__(self, db_path: str, settings: Settings) -> Endpoint:
        kill = self.kill
        if kill is None or threading.current_thread().name != f"quaero-producer-{self.parent}" or kill.killed_at:
            return self.inner(db_path, settings)
        supervised = _Supervised(self.inner, db_path, settings, kill, self.children)
        return Endpoint(queue=_CurrentQueue(supervised), store=_DyingStore(supervised),
                        close=lambda: supervised.current.close())


# ------------------------------------------------------------------ the pool (restartable, killable)


class FaultPool:
    """A worker pool that can be restarted and whose workers can be killed; the run sees one pool."""

    def __init__(self, db_path: str, settings: Settings, *, make_pool: Callable[..., WorkerPool],
                 **pool_kwargs: Any) -> None:
        self.db_path = db_path
        self.settings = settings
        self._make: Callable[[], WorkerPool] = functools.partial(make_pool, db_path, settings, **pool_kwargs)
        self._inner = self._make()
        self._retired: list[WorkerPool] = []
        self._lock = threading.Lock()
        self._restart_lock = threading.Lock()
        self._restarting = False
        self._stopped = False
        self.job_attempts: dict[str, list[tuple[int, str]]] = {}

    @property
    def mode(self) -> str:
        return self.settings.worker_mode

    @property
    def started_at(self) -> float | None:
        return self._inner.started_at

    @property
    def processes(self) -> list[BaseProcess]:
        return self._inner.processes

    @property
    def alive(self) -> int:
        # Mid-restart the run must not conclude that every worker stopped.
        return self.settings.workers if self._restarting else self._inner.alive

    def start(self) -> float:
        return self._inner.start()

    def poll_events(self) -> list[Event]:
        with self._lock:
            pools = [*self._retired, self._inner]
        events: list[Event] = []
        for pool in pools:
            events.extend(pool.poll_events())
        for event in events:
            if event[0] == "job":
                self.job_attempts.setdefault(event[2], []).append((event[7], event[3]))
        return events

    def restart(self) -> tuple[list[int], list[int], float]:
        """Stop every worker (each finishes its job), start a new pool; returns old/new pids and seconds."""
        began = time.monotonic()
        with self._restart_lock:
            if self._stopped:
                return [], [], 0.0
            self._restarting = True
            try:
                old = self._inner
                old_pids = _pids(old)
                old.stop()
                new = self._make()
                new.start()
                with self._lock:
                    self._retired.append(old)
                    self._inner = new
                return old_pids, _pids(new), time.monotonic() - began
            finally:
                self._restarting = False

    def stop(self, timeout: float = 60.0) -> None:
        with self._restart_lock:
            self._stopped = True
            self._inner.stop(timeout)

    def cancel(self) -> None:
        """Stop now, cutting jobs short (an interrupt, or a run past its deadline)."""
        with self._restart_lock:
            self._stopped = True
            self._inner.cancel()

    def __enter__(self) -> FaultPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pids(pool: WorkerPool) -> list[int]:
    """The worker processes' ids (none in thread mode)."""
    return [p.pid for p in pool.processes if p.pid is not None]
