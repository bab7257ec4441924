"""Faults injected into a run: a worker killed mid-job, a producer killed mid-parent, a pool restart.

``--quaero-faults=SPEC`` is a ``;``-separated list of faults, each ``KIND[:KEY=VALUE,...]``::

    kill-worker:after=25%        once 25% of the jobs are done, kill the worker that starts the
                                 next job, while that job is in flight (after=N counts jobs;
                                 at=DURATION triggers on time since the pool started instead)
    kill-producer:parent=1,after=5
                                 producer 1 dies inside the transaction of its 6th child, after
                                 committing 5; a supervisor restarts it, and the restarted
                                 producer must resume without creating anything twice
    restart-pool:after=50%       stop every worker (each finishes its job) and start a new pool

How each fault is made real:

* **kill-worker**, process mode: the worker process is killed with SIGKILL while its job
  is held in flight (the job's handler waits, up to ``hold``, to be killed). SQLite
  releases the dead process's locks and discards its uncommitted frames; the message
  comes back after the visibility timeout and another worker completes it. Thread mode
  cannot kill a thread, so the worker's thread dies instead: the handler raises
  :class:`WorkerKilled` (a ``BaseException``, which nothing in the worker catches).
  Either way the message is redelivered only after ``--quaero-visibility-timeout``, so
  use a short one (e.g. ``5s``) with this fault.
* **kill-producer**: producers are threads of the run, so the kill is simulated where it
  hurts: :class:`ProducerKilled` is raised between the child row's INSERT and its
  message's INSERT, inside their shared transaction, which rolls back exactly as SQLite
  discards a killed process's uncommitted frames. The dead producer's connection is
  closed; a supervisor restarts the producer on a new connection, which walks the parent
  from the start: what was committed must still be there, the killed child must not be
  (half-committed), and everything missing is created once.
* **restart-pool**: a graceful restart, as a deploy does it.

After every fault nothing may be lost or done twice: the gate's ``fault_recovery``
item requires every fault injected, every job completed exactly once, the hierarchy
intact and the queue drained. What happened is in ``result.extra["faults"]``:

``spec``
    the SPEC as given
``injected``
    one entry per fault that happened: ``fault``, ``at`` (seconds since the run started),
    ``jobs_done`` (completed jobs when it fired) and what it hit: ``worker``, ``pid``,
    ``job_id``, ``signal``, ``redelivered``, ``completed`` (kill-worker); ``parent_id``,
    ``killed_child``, ``children_committed``, ``children_survived``,
    ``killed_child_rolled_back``, ``children_resumed``, ``restarted_at`` (kill-producer);
    ``old_pids``/``new_pids``, ``seconds`` (restart-pool)
``missed``
    faults that never fired, with the reason (e.g. the queue drained first)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_quaero.core.settings import Settings, parse_duration

if TYPE_CHECKING:
    from pytest_quaero.core.disturbance import RunContext
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.core.pool import Endpoint, Job, JobContext, WorkerPool

__all__ = [
    "FaultError",
    "FaultPlan",
    "FaultSpec",
    "ProducerKilled",
    "WorkerKilled",
    "parse_faults",
]

_KINDS: dict[str, dict[str, Any]] = {
    "kill-worker": {"after": "25%", "at": None, "hold": 30.0},
    "kill-producer": {"parent": 1, "after": None},
    "restart-pool": {"after": "50%", "at": None},
}
_EXAMPLE = "kill-worker:after=25%;kill-producer:parent=1,after=5;restart-pool:after=50%"


class FaultError(ValueError):
    """A faults SPEC that cannot be used; the message names the part and what is allowed."""


class WorkerKilled(BaseException):
    """Ends a worker thread mid-job (thread mode's stand-in for SIGKILL); nothing catches it."""


class ProducerKilled(Exception):
    """Ends a producer inside a child's transaction, after some children were committed."""


@dataclass(frozen=True)
class FaultSpec:
    """One fault: its kind and parameters (``after`` as ``(number, is_percent)``, durations in seconds)."""

    kind: str
    params: dict[str, Any]
    text: str

    def after_jobs(self, total: int) -> int:
        amount, percent = self.params["after"]
        return min(total - 1, max(0, round(total * amount / 100))) if percent else int(amount)


def parse_faults(text: str, *, option: str = "--quaero-faults") -> list[FaultSpec]:
    """``'kill-worker:after=25%;restart-pool:at=2s'`` -> fault specs."""
    from pytest_quaero.core.disturbance import split_spec

    faults: list[FaultSpec] = []
    for part, kind, given in split_spec(text, _KINDS, option=option, noun="fault", example=_EXAMPLE,
                                        error=FaultError):
        where = f"{option}={text}: {part!r}"
        defaults = _KINDS[kind]
        if "at" in given and "after" in given:
            raise FaultError(f"{where}: give after= or at=, not both")
        raw: dict[str, Any] = {**defaults, **given}
        if "at" in given:
            raw["after"] = None  # a time trigger replaces the default progress trigger
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if value is None or (key == "hold" and key not in given):
                params[key] = value
                continue
            try:
                if key in ("at", "hold"):
                    params[key] = parse_duration(str(value))
                    if key == "hold" and params[key] <= 0:
                        raise ValueError(value)
                elif key == "after":
                    match = re.fullmatch(r"(\d+(?:\.\d+)?)(%?)", str(value))
                    if match is None or (match[2] and float(match[1]) > 100):
                        raise ValueError(value)
                    params[key] = (float(match[1]), bool(match[2]))
                else:  # parent
                    if not re.fullmatch(r"\d+", str(value)) or int(value) < 1:
                        raise ValueError(value)
                    params[key] = int(value)
            except ValueError:
                allowed = {"at": "a duration such as 2s", "hold": "a duration > 0 such as 30s",
                           "after": "a number of jobs (10) or a percentage (25%)",
                           "parent": "a parent number >= 1"}[key]
                raise FaultError(f"{where}: invalid {key}={value!r}; allowed: {allowed}") from None
        faults.append(FaultSpec(kind, params, part))
    return faults


def check_faults(faults: list[FaultSpec], settings: Settings, *, children: int | None = None,
                 option: str = "--quaero-faults") -> list[str]:
    """Reject faults the settings cannot survive; return warnings for ones that will be slow."""
    warnings: list[str] = []
    for fault in faults:
        if fault.kind == "kill-worker":
            if settings.workers < 2 and not any(f.kind == "restart-pool" for f in faults):
                raise FaultError(f"{option}: {fault.text!r} needs at least 2 workers (--quaero-workers) so "
                                 "another worker can take over the killed one's job")
            if settings.visibility_timeout > 60:
                warnings.append(
                    f"{option}: {fault.text!r}: the killed job comes back only after the visibility timeout "
                    f"({settings.describe('visibility_timeout')}); set --quaero-visibility-timeout=5s or the run "
                    "waits that long")
        if fault.kind == "kill-producer" and children is not None and fault.params["after"] is not None:
            after = fault.params["after"]
            if not after[1] and after[0] >= children:
                raise FaultError(f"{option}: {fault.text!r}: after={after[0]:g} but a parent has only {children} "
                                 "children; the producer would finish before dying")
    return warnings


# ------------------------------------------------------------------ the handler (runs in workers)


@dataclass
class FaultHandler:
    """Wraps the job handler so an armed kill finds a worker mid-job. Picklable (process mode)."""

    inner: Callable[[Job, JobContext], None]
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
class _ProducerKill:
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

    def __init__(self, factory: Callable[[str, Settings], Endpoint], db_path: str, settings: Settings,
                 kill: _ProducerKill, children: int) -> None:
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
        from pytest_quaero.core import integrity

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

    inner: Callable[[str, Settings], Endpoint]
    parent: int
    after: int | None
    children: int
    _kill: _ProducerKill | None = None

    def __post_init__(self) -> None:
        self._kill = _ProducerKill(self.parent, self.after)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_kill"] = None  # a worker process never produces
        return state

    def __call__(self, db_path: str, settings: Settings) -> Endpoint:
        kill = self._kill
        if kill is None or threading.current_thread().name != f"quaero-producer-{self.parent}" or kill.killed_at:
            return self.inner(db_path, settings)
        from pytest_quaero.core.pool import Endpoint

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
        self._make = lambda: make_pool(db_path, settings, **pool_kwargs)
        self._inner = self._make()
        self._retired: list[Any] = []
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
    def processes(self) -> list[Any]:
        return self._inner.processes

    @property
    def alive(self) -> int:
        # Mid-restart the run must not conclude that every worker stopped.
        return self.settings.workers if self._restarting else self._inner.alive

    def start(self) -> float:
        return self._inner.start()

    def poll_events(self) -> list[tuple[Any, ...]]:
        with self._lock:
            pools = [*self._retired, self._inner]
        events: list[tuple[Any, ...]] = []
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
                old_pids = [p.pid for p in old.processes]
                old.stop()
                new = self._make()
                new.start()
                with self._lock:
                    self._retired.append(old)
                    self._inner = new
                return old_pids, [p.pid for p in new.processes], time.monotonic() - began
            finally:
                self._restarting = False

    def stop(self, timeout: float = 60.0) -> None:
        with self._restart_lock:
            self._stopped = True
            self._inner.stop(timeout)

    def __enter__(self) -> FaultPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------ the plan (a Disturbance)


class FaultPlan:
    """The faults of one SPEC for one run: the wrappers to run with, and the driver that fires them."""

    def __init__(self, faults: list[FaultSpec], spec: str = "", *, total_jobs: int, children: int) -> None:
        self.faults = faults
        self.spec = spec or ";".join(f.text for f in faults)
        self.total_jobs = total_jobs
        self.control_dir = tempfile.mkdtemp(prefix="quaero-faults-")
        producer = next((f for f in faults if f.kind == "kill-producer"), None)
        self._producer_fault = producer
        self._endpoints: FaultEndpointFactory | None = None
        self._producer_after = None
        if producer is not None and producer.params["after"] is not None:
            self._producer_after = producer.after_jobs(children) if producer.params["after"][1] else int(
                producer.params["after"][0])
        self.children = children
        self.pool: FaultPool | None = None
        self.injected: list[dict[str, Any]] = []
        self.missed: list[dict[str, Any]] = []
        self._run: RunContext | None = None
        self._driver: threading.Thread | None = None
        self._stopping = threading.Event()

    @classmethod
    def from_spec(cls, text: str, *, total_jobs: int, children: int) -> FaultPlan:
        return cls(parse_faults(text), text, total_jobs=total_jobs, children=children)

    # --- what the run is started with

    def handler(self, inner: Callable[[Job, JobContext], None] | None, settings: Settings) -> Any:
        if not any(f.kind == "kill-worker" for f in self.faults):
            return inner
        from pytest_quaero.core.pool import SimulatedWork

        hold = next(f.params["hold"] for f in self.faults if f.kind == "kill-worker")
        return FaultHandler(inner or SimulatedWork(*settings.job_time, seed=settings.seed), self.control_dir, hold)

    def endpoint_factory(self, inner: Callable[[str, Settings], Endpoint]) -> Callable[[str, Settings], Endpoint]:
        fault = self._producer_fault
        if fault is None:
            return inner
        self._endpoints = FaultEndpointFactory(inner, fault.params["parent"], self._producer_after, self.children)
        return self._endpoints

    def pool_factory(self, make_pool: Callable[..., WorkerPool] | None = None) -> Callable[..., FaultPool]:
        if make_pool is None:
            from pytest_quaero.core.pool import WorkerPool

            make_pool = WorkerPool

        def factory(db_path: str, settings: Settings, **kwargs: Any) -> FaultPool:
            self.pool = FaultPool(db_path, settings, make_pool=make_pool, **kwargs)
            return self.pool

        return factory

    # --- Disturbance

    def start(self, run: RunContext) -> None:
        self._run = run
        if self._producer_fault is not None and self._producer_fault.params["parent"] > run.scenario.parents:
            self.missed.append({"fault": "kill-producer", "spec": self._producer_fault.text,
                                "reason": f"the scenario has only {run.scenario.parents} parents"})
        timed = [f for f in self.faults if f.kind in ("kill-worker", "restart-pool")]
        if timed:
            self._driver = threading.Thread(target=self._drive, args=(timed,), name="quaero-faults", daemon=True)
            self._driver.start()

    def _jobs_done(self, conn: sqlite3.Connection) -> int:
        assert self._run is not None
        try:
            row = conn.execute("select count(*) from crawl_jobs where status = 'completed' and parent_id != '' "
                               "and id glob ?", (f"{self._run.run_id}-*",)).fetchone()
            return int(row[0])
        except sqlite3.Error:
            return -1

    def _drive(self, faults: list[FaultSpec]) -> None:
        """Fire each fault when its trigger is reached; progress is read from the database."""
        from pytest_quaero.core import db

        run = self._run
        assert run is not None
        pending = list(faults)
        conn = db.connect(run.db_path, run.settings)
        try:
            while pending and not self._stopping.is_set():
                done = self._jobs_done(conn)
                elapsed = time.monotonic() - run.t0
                for fault in list(pending):
                    at = fault.params.get("at")
                    due = elapsed >= at if at is not None else done >= fault.after_jobs(self.total_jobs)
                    if not due:
                        continue
                    pending.remove(fault)
                    try:
                        if fault.kind == "kill-worker":
                            self._kill_worker(fault, done)
                        else:
                            self._restart_pool(fault, done)
                    except Exception as exc:  # recorded, never raised into the run
                        self.missed.append({"fault": fault.kind, "spec": fault.text,
                                            "reason": f"{type(exc).__name__}: {exc}"})
                self._stopping.wait(0.01)
        finally:
            conn.close()
            for fault in pending:
                self.missed.append({"fault": fault.kind, "spec": fault.text,
                                    "reason": "the run ended before the trigger was reached"})

    def _kill_worker(self, fault: FaultSpec, done: int) -> None:
        run, pool = self._run, self.pool
        assert run is not None
        control = Path(self.control_dir)
        arm = control / "arm-kill-worker"
        arm.write_text("armed\n", encoding="utf-8")
        armed_at = time.monotonic()
        held: Path | None = None
        while held is None and not self._stopping.is_set():
            held = next(iter(sorted(control.glob("held-*"))), None)
            if held is None:
                self._stopping.wait(0.005)
        if held is None:
            with contextlib.suppress(FileNotFoundError):
                arm.unlink()
            self.missed.append({"fault": "kill-worker", "spec": fault.text,
                                "reason": "no job started after the kill was armed (the queue drained first)"})
            return
        pid_text, job_id, worker = held.read_text(encoding="utf-8").splitlines()[:3]
        token = held.name.removeprefix("held-")
        entry: dict[str, Any] = {"fault": "kill-worker", "spec": fault.text, "jobs_done": done, "job_id": job_id,
                                 "worker": worker, "pid": int(pid_text), "mode": run.settings.worker_mode,
                                 "armed_at": round(armed_at - run.t0, 4)}
        target = None
        if run.settings.worker_mode == "process" and pool is not None:
            target = next((p for p in pool.processes if p.pid == int(pid_text)), None)
        if target is not None:
            target.kill()
            entry["signal"] = "SIGKILL"
        else:
            (control / f"kill-{token}").write_text("kill\n", encoding="utf-8")
            entry["signal"] = "WorkerKilled (thread ends)"
        entry["at"] = round(time.monotonic() - run.t0, 4)
        run.mark("fault_injected", label=f"Fault injected: {worker} killed mid-job {job_id} ({entry['signal']})")
        self.injected.append(entry)

    def _restart_pool(self, fault: FaultSpec, done: int) -> None:
        run, pool = self._run, self.pool
        assert run is not None and pool is not None
        at = time.monotonic()
        old, new, seconds = pool.restart()
        run.mark("fault_injected", at, label=f"Fault injected: worker pool restarted ({seconds:.2f}s)")
        self.injected.append({"fault": "restart-pool", "spec": fault.text, "jobs_done": done,
                              "at": round(at - run.t0, 4), "seconds": round(seconds, 4),
                              "old_pids": old, "new_pids": new})

    def stop(self) -> None:
        self._stopping.set()
        if self._driver is not None:
            self._driver.join(30)
        run = self._run
        kill = self._endpoints._kill if self._endpoints is not None else None
        if run is not None and kill is not None and self._producer_fault is not None:
            if kill.killed_at is None:
                if not any(m["fault"] == "kill-producer" for m in self.missed):
                    self.missed.append({"fault": "kill-producer", "spec": self._producer_fault.text,
                                        "reason": "the producer finished before its kill point"})
            else:
                run.mark("fault_injected", kill.killed_at,
                         label=f"Fault injected: producer of {kill.parent_id} killed after {kill.committed} children")
                self.injected.append({
                    "fault": "kill-producer", "spec": self._producer_fault.text, "parent_id": kill.parent_id,
                    "at": round(kill.killed_at - run.t0, 4), "killed_child": kill.killed_child,
                    "children_committed": kill.committed, "children_survived": kill.survived,
                    "killed_child_rolled_back": kill.rolled_back, "children_resumed": kill.resumed,
                    "restarted_at": round(kill.restarted_at - run.t0, 4) if kill.restarted_at else None,
                })
        if run is not None:
            self._verify_kills(run)
        self.close()

    def close(self) -> None:
        """Remove the control directory (also when the run failed before the plan started)."""
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def _verify_kills(self, run: RunContext) -> None:
        """Did each killed job come back (a later delivery) and complete?"""
        from pytest_quaero.core import db

        kills = [e for e in self.injected if e["fault"] == "kill-worker"]
        if not kills:
            return
        attempts = self.pool.job_attempts if self.pool is not None else {}
        try:
            conn = db.connect(run.db_path, run.settings)
        except sqlite3.Error:
            return
        try:
            for entry in kills:
                row = conn.execute("select status from crawl_jobs where id = ?", (entry["job_id"],)).fetchone()
                entry["completed"] = bool(row and row[0] == "completed")
                entry["redelivered"] = any(attempt > 1 for attempt, _ in attempts.get(entry["job_id"], []))
        except sqlite3.Error:
            pass
        finally:
            conn.close()

    def record(self, result: RunResult) -> None:
        result.extra["faults"] = {
            "spec": self.spec,
            "injected": sorted(self.injected, key=lambda e: e.get("at") or 0.0),
            "missed": self.missed,
        }
        verdict = recovery_verdict(result, len(self.faults))
        result.extra["faults"]["verdict"] = verdict
        if not verdict["passed"]:
            result.extra["keep_files"] = True  # the database shows what was lost; keep it


def recovery_verdict(result: RunResult, planned: int) -> dict[str, Any]:
    """The ``fault_recovery`` verdict: every fault fired, nothing lost, nothing twice, all drained."""
    from pytest_quaero.core.criteria import Verdict

    info = result.extra.get("faults", {})
    injected, missed = info.get("injected", []), info.get("missed", [])
    problems = []
    if missed or len(injected) < planned:
        problems.append("; ".join(f"{m['spec']} not injected: {m['reason']}" for m in missed) or
                        f"{len(injected)} of {planned} faults injected")
    lost = result.total_jobs - result.jobs_completed
    if lost:
        problems.append(f"{lost} jobs not completed")
    if result.duplicate_completions:
        problems.append(f"{result.duplicate_completions} jobs processed to completion twice")
    if result.hierarchy_integrity < 100:
        problems.append(f"hierarchy {result.hierarchy_integrity:.1f}%")
    if result.messages_left:
        problems.append(f"{result.messages_left} messages left in the queue ({result.dead_messages} dead)")
    if result.timed_out:
        problems.append("deadline reached before the queue drained")
    for entry in injected:
        if entry["fault"] == "kill-producer":
            if entry["children_survived"] != entry["children_committed"]:
                problems.append(f"{entry['children_committed'] - entry['children_survived']} children committed "
                                "before the producer died were gone after it")
            if not entry["killed_child_rolled_back"]:
                problems.append(f"{entry['killed_child']} was half-committed by the dying producer")
    kinds = ", ".join(f"{e['fault']} at {e.get('at', 0):.2f}s" for e in injected) or "none"
    measured = (f"{len(injected)}/{planned} faults injected ({kinds}); {result.jobs_completed}/{result.total_jobs} "
                f"jobs completed, {result.duplicate_completions} twice, {result.messages_left} messages left")
    return Verdict("fault_recovery", "Fault Recovery", measured,
                   "every fault injected; no job lost or processed twice; hierarchy intact; queue drained",
                   not problems, float(len(problems)), "; ".join(problems)).as_dict()
