"""Faults injected into a run: the plan of one ``--quaero-faults`` SPEC, fired and recorded.

The SPEC grammar is :mod:`pytest_quaero.core.fault_spec`; how each fault is made real is
:mod:`pytest_quaero.core.fault_injectors`. A :class:`FaultPlan` is a
:class:`~pytest_quaero.core.disturbance.Disturbance`: the run is started with its wrapped
handler, endpoint factory and pool, and its driver thread fires each fault when its
trigger (jobs done, or time) is reached.

After every fault nothing may be lost or done twice: the gate's ``fault_recovery``
item (:func:`recovery_verdict`) requires every fault injected, every job completed
exactly once, the hierarchy intact and the queue drained. What happened is in
``result.extra["faults"]``:

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
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_quaero.core import db
from pytest_quaero.core.criteria import Verdict
from pytest_quaero.core.disturbance import RunContext
from pytest_quaero.core.fault_injectors import (
    FaultEndpointFactory,
    FaultHandler,
    FaultPool,
    ProducerKilled,
    WorkerKilled,
)
from pytest_quaero.core.fault_spec import FaultError, FaultSpec, check_faults, parse_faults
from pytest_quaero.core.jobs import Handler, SimulatedWork
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.pool import WorkerPool
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.worker import EndpointFactory

__all__ = [
    "FaultError",
    "FaultPlan",
    "FaultSpec",
    "ProducerKilled",
    "WorkerKilled",
    "check_faults",
    "parse_faults",
    "recovery_verdict",
]

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

    def handler(self, inner: Handler | None, settings: Settings) -> Handler | None:
        """``inner`` (None: the default handler), or a wrapper that holds a job for a kill-worker fault."""
        if not any(f.kind == "kill-worker" for f in self.faults):
            return inner
        hold = next(f.params["hold"] for f in self.faults if f.kind == "kill-worker")
        return FaultHandler(inner or SimulatedWork(*settings.job_time, seed=settings.seed), self.control_dir, hold)

    def endpoint_factory(self, inner: EndpointFactory) -> EndpointFactory:
        """``inner``, or a wrapper whose chosen producer dies mid-parent for a kill-producer fault."""
        fault = self._producer_fault
        if fault is None:
            return inner
        self._endpoints = FaultEndpointFactory(inner, fault.params["parent"], self._producer_after, self.children)
        return self._endpoints

    def pool_factory(self, make_pool: Callable[..., WorkerPool] = WorkerPool) -> Callable[..., FaultPool]:
        """Makes the run's pool a restartable :class:`FaultPool` around ``make_pool``'s, and keeps it."""

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
                    except Exception as exc:  # noqa: BLE001 - whatever fails is recorded, never raised into the run
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
        kill = self._endpoints.kill if self._endpoints is not None else None
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
