"""One scenario run: seed the crawl-job tree, drain it with the pool, validate, record.

The order is the template's: create the schema (once, before any worker), start
the staggered pool, create the parents concurrently (one producer per parent:
parent row, then each child row together with its message), watch the queue until
it is drained, stop the pool, run the integrity SQL. The run measures and records;
it never decides pass or fail (that is :mod:`pytest_quaero.core.criteria`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_quaero.core import db, integrity
from pytest_quaero.core.disturbance import Disturbance, RunContext
from pytest_quaero.core.log import TemplateFormatter, get_logger, log_excerpts, logger
from pytest_quaero.core.metrics import RunResult, WorkerRecord
from pytest_quaero.core.pool import Endpoint, EndpointFactory, Handler, WorkerPool, encode_job, open_endpoint
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.queue import create_schema as create_queue_schema
from pytest_quaero.core.retry import Retrier, classify, merge_stats
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import create_schema as create_store_schema

__all__ = ["Progress", "RunError", "prepare_database", "run_scenario"]

PHASES = {
    "initialization": "Test initialization and configuration",
    "pool_started": "Worker pool started",
    "parent_creation_started": "Parent job creation started",
    "processing_started": "Worker processing started",
    "queueing_completed": "Child job creation and queueing completed",
    "jobs_completed": "All jobs completed",
    "validation": "Validation and metrics collection",
    "completed": "Test completion",
}


class RunError(RuntimeError):
    """The run could not be carried out at all (not a failed criterion)."""


@dataclass(frozen=True)
class Progress:
    """A live view of a running scenario, handed to the progress display."""

    scenario: str
    done: int
    total: int
    queue_length: int
    elapsed: float
    #: lock errors the workers met so far (each one retried or escaped)
    busy_errors: int

    @property
    def jobs_per_second(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


class _Tally:
    """Folds worker events into counters as they arrive."""

    def __init__(self, workers: int, t0: float) -> None:
        self.t0 = t0
        self.workers = [WorkerRecord(index=i, name=f"JobWorker-{i + 1}") for i in range(workers)]
        #: every job that reached completed or failed; ``completed`` is derived from it (one set
        #: of ids, not two: at 150,000 jobs a second set would cost ~6 MB)
        self.finished: set[str] = set()
        self.failed: set[str] = set()
        self.duplicates: list[str] = []
        self.processing_times: list[float] = []
        self.latencies: list[float] = []
        self.redeliveries = 0
        self.job_errors = 0
        self.errors: list[str] = []
        self.retry_parts: list[dict[str, dict[str, Any]]] = []
        self.first_received: float | None = None
        #: when the latest job finished (``time.monotonic()``): the timeline's jobs-completed phase
        self.last_done: float | None = None
        self.live_busy = 0

    @property
    def completed(self) -> set[str]:
        """Jobs that completed (finished and not failed: finish_child counts a job only once)."""
        return self.finished - self.failed

    def fold(self, events: list[tuple[Any, ...]]) -> None:
        for event in events:
            kind, index = event[0], event[1]
            worker = self.workers[index] if 0 <= index < len(self.workers) else None
            if kind == "job":
                _, _, job_id, outcome, received_at, done_at, latency, attempt = event
                if self.first_received is None or received_at < self.first_received:
                    self.first_received = received_at
                if self.last_done is None or done_at > self.last_done:
                    self.last_done = done_at
                if attempt > 1:
                    self.redeliveries += 1
                if worker is not None:
                    worker.jobs += 1
                if outcome == "completed":
                    self.finished.add(job_id)
                    # Rounded here, as the result stores them, so _record keeps these lists
                    # instead of building a second copy of each at the run's peak memory.
                    self.processing_times.append(round(done_at - received_at, 6))
                    self.latencies.append(round(latency, 6))
                elif outcome == "failed":
                    self.failed.add(job_id)
                    self.finished.add(job_id)
                elif outcome == "duplicate":
                    self.duplicates.append(job_id)
                elif outcome == "error":
                    self.job_errors += 1
            elif kind == "started" and worker is not None:
                worker.started_wall = event[2]
                worker.start_offset = event[3] - self.t0
            elif kind == "stopped" and worker is not None:
                worker.stop_offset = event[2] - self.t0
                worker.busy_seconds = event[3]
                self.retry_parts.append(event[4])
            elif kind == "busy":
                self.live_busy += 1
            elif kind == "error":
                self.errors.append(f"JobWorker-{index + 1}: {event[2]}")


class _Producers:
    """One thread per parent, all started at once: the template's concurrent job creation."""

    def __init__(self, scenario: Scenario, run_id: str, db_path: str, settings: Settings,
                 endpoint_factory: EndpointFactory) -> None:
        self.scenario, self.run_id, self.db_path, self.settings = scenario, run_id, db_path, settings
        self.endpoint_factory = endpoint_factory
        self.sent = 0
        self.errors: list[str] = []
        self.retry_parts: list[dict[str, dict[str, Any]]] = []
        #: when the last producer finished (``time.monotonic()``): the timeline's queueing phase
        self.finished_at: float | None = None
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._produce, args=(p,), name=f"quaero-producer-{p}", daemon=True)
            for p in range(1, scenario.parents + 1)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def done(self) -> bool:
        return not any(thread.is_alive() for thread in self._threads)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:  # never started: the run failed before producing
                thread.join(max(0.0, deadline - time.monotonic()))

    def _produce(self, p: int) -> None:
        name = f"Producer-{p}"
        retrier = Retrier(self.settings.retry_attempts, self.settings.retry_backoff,
                          busy_timeout_ms=self.settings.busy_timeout_ms, name=name)
        sent = 0
        errors: list[str] = []
        endpoint: Endpoint | None = None
        try:
            # Opening can meet a lock too (PRAGMAs in rollback-journal mode): retried and counted.
            endpoint = retrier.call("connect", lambda: self.endpoint_factory(self.db_path, self.settings))
            store, queue = endpoint.store, endpoint.queue
            pid = integrity.parent_id(self.run_id, p)
            children = self.scenario.children
            retrier.call("save_job", lambda: store.save_parent(pid, f"Crawl job {p}", children), pid)
            for c in range(1, children + 1):
                cid = integrity.child_id(self.run_id, p, c)
                url = f"http://test-server/parent-{p}/page-{c}"
                body = encode_job(cid, pid, url)
                try:
                    retrier.call(
                        "create_child",
                        lambda: store.create_child(cid, pid, url, f"page-{c}", enqueue=lambda: queue.send(body)),
                        cid,
                    )
                    sent += 1
                except sqlite3.Error as exc:
                    errors.append(f"{name} child {cid}: {classify(exc) or type(exc).__name__}: {exc}")
        except Exception as exc:
            errors.append(f"{name}: {classify(exc) or type(exc).__name__}: {exc}")
        finally:
            if endpoint is not None:
                endpoint.close()
            with self._lock:
                self.sent += sent
                self.errors.extend(errors)
                self.retry_parts.append(retrier.snapshot())
                self.finished_at = time.monotonic()


def _attach_log(log_path: str) -> Callable[[], None]:
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(TemplateFormatter())
    logger.addHandler(handler)
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)

    def detach() -> None:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(previous)

    return detach


def run_scenario(
    scenario: Scenario,
    settings: Settings,
    *,
    run_dir: str | os.PathLike[str],
    handler: Handler | None = None,
    endpoint_factory: EndpointFactory = open_endpoint,
    on_progress: Callable[[Progress], None] | None = None,
    deadline: float | None = None,
    sample_interval: float = 0.25,
    pool_factory: Callable[..., WorkerPool] = WorkerPool,
    disturbances: Sequence[Disturbance] = (),
) -> RunResult:
    """Run ``scenario`` once and return everything it measured.

    ``deadline`` (seconds, default the scenario's time limit) stops a run that does
    not drain; the result then says ``timed_out`` and the criteria judge it.
    ``handler``, ``endpoint_factory`` and ``pool_factory`` swap in a user's (or a
    deliberately broken) job handler, queue/store, or pool. ``disturbances`` (contention
    loads, fault injectors; see :mod:`pytest_quaero.core.disturbance`) start after the pool and
    stop after the drain.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    db_path = str(Path(settings.db_path).resolve()) if settings.db_path else str(run_dir / "quaero.db")
    log_path = str(run_dir / "quaero.log")
    run_id = secrets.token_hex(4)
    deadline = scenario.time_limit if deadline is None else deadline
    detach_log = _attach_log(log_path)
    log = get_logger("WorkerPool")
    t0 = time.monotonic()
    timeline = [{"phase": "initialization", "label": PHASES["initialization"], "offset": 0.0}]

    def mark(phase: str, at: float | None = None, label: str | None = None) -> None:
        offset = (time.monotonic() if at is None else at) - t0
        timeline.append({"phase": phase, "label": label or PHASES[phase], "offset": round(offset, 6)})

    result = RunResult(
        scenario=scenario.name, parents=scenario.parents, children_per_parent=scenario.children, run_id=run_id,
        settings=settings.as_dict(), settings_sources=dict(settings.sources), time_limit=scenario.time_limit,
        db_path=db_path, log_path=log_path, started_wall=time.time(), sqlite_version=sqlite3.sqlite_version,
        python_version=platform.python_version(), platform=f"{platform.system()} {platform.release()} {platform.machine()}",
    )
    try:
        log.info("Scenario %s: %d parents x %d children = %d jobs, run %s, database %s", scenario.name,
                 scenario.parents, scenario.children, scenario.total_jobs, run_id, db_path)
        result.pragmas = _prepare(db_path, settings).as_dict()
        pool = pool_factory(db_path, settings, handler=handler, endpoint_factory=endpoint_factory,
                            log_path=log_path if settings.worker_mode == "process" else None)
        producers = _Producers(scenario, run_id, db_path, settings, endpoint_factory)
        pool_started = pool.start()
        # Spawning worker processes (~0.3 s, before the pool's clock starts) is the harness's
        # cost, not the queue's: the run's clock starts with the pool's, so process mode is not
        # judged slower for it. What it cost stays on record.
        result.extra["pool_startup_seconds"] = round(pool_started - t0, 6)
        t0 = pool_started
        tally = _Tally(settings.workers, t0)
        mark("pool_started", pool_started)
        # The monitor is the harness, not the system under test: it waits for locks however
        # short the settings make busy_timeout (a busy_timeout=0 run must be judged, not crash
        # on its own observer meeting a WAL reset).
        monitor = db.connect(db_path, dataclasses.replace(
            settings, busy_timeout_ms=max(settings.busy_timeout_ms, _MONITOR_BUSY_TIMEOUT_MS)))
        # The monitor only counts the queue and, after the drain, runs the integrity SQL: scans
        # that would fill a page cache of settings.cache_size_mb (64 MB) with pages read once;
        # at 150,000 jobs that was ~60 MB of the run's peak memory. Workers keep their setting.
        monitor.execute(f"PRAGMA cache_size = {-min(_MONITOR_CACHE_KIB, settings.cache_size_mb * 1024)}")
        # A queue made by pytest_quaero_make_queue keeps its messages where it likes, so the
        # run watches it through its own counts() (protocols.QueueProtocol), not the goqite table.
        watched = endpoint_factory(db_path, settings) if getattr(endpoint_factory, "watch_queue", False) else None
        started: list[Disturbance] = []
        try:
            for disturbance in disturbances:
                disturbance.start(RunContext(scenario, settings, db_path, str(run_dir), run_id, t0, pool, mark))
                started.append(disturbance)
            mark("parent_creation_started")
            producers.start()
            _watch(scenario, settings, pool, producers, tally, monitor, t0, deadline, sample_interval,
                   result, on_progress, mark, watched.queue if watched is not None else None)
        finally:
            pool.stop()
            producers.join(30)
            tally.fold(pool.poll_events())
            done_at = time.monotonic()
            for disturbance in reversed(started):
                disturbance.stop()
        result.execution_time = done_at - t0
        if tally.first_received is not None:
            mark("processing_started", tally.first_received)
        mark("validation")
        try:
            checks = integrity.check(monitor, run_id, parents=scenario.parents, children_per_parent=scenario.children,
                                     queue_name=settings.queue_name, max_receive=settings.max_receive)
            if watched is not None:
                left = watched.queue.counts()
                checks["messages_left"], checks["dead_messages"] = int(left.total), int(left.dead)
        finally:
            monitor.close()
            if watched is not None:
                watched.close()
        _record(result, tally, producers, checks)
        for disturbance in started:
            disturbance.record(result)
        timeline.sort(key=lambda entry: entry["offset"])
        mark("completed")
        result.timeline = timeline
        result.total_duration = time.monotonic() - t0
        log.info("Scenario %s finished: %d/%d jobs completed in %.2fs (%.1f jobs/s), %d busy errors",
                 scenario.name, result.jobs_completed, scenario.total_jobs, result.execution_time,
                 result.throughput, result.busy_errors)
        # The reports quote real lines of this run; read them while the file is certainly here.
        result.log_excerpts = log_excerpts(log_path)
        return result
    finally:
        detach_log()


def prepare_database(db_path: str | os.PathLike[str], settings: Settings) -> db.Pragmas:
    """Journal mode, then the goqite and crawl_jobs tables, with the pragmas read back.

    Once, before any worker exists: the run, the ``quaero_db`` fixture and the benchmarks
    all start from a file prepared here.
    """
    db.prepare(db_path, settings)
    conn = db.connect(db_path, settings)
    try:
        create_queue_schema(conn)
        create_store_schema(conn)
        return db.verify(conn, settings)
    finally:
        conn.close()


def _prepare(db_path: str, settings: Settings) -> db.Pragmas:
    """prepare_database, refusing a file whose queue still holds an earlier run's messages."""
    pragmas = prepare_database(db_path, settings)
    conn = db.connect(db_path, settings)
    try:
        leftover = len(Queue(conn, settings.queue_name))
    finally:
        conn.close()
    if leftover:
        raise RunError(
            f"{db_path}: queue {settings.queue_name!r} already holds {leftover} messages from an earlier run; "
            "a run must start from an empty queue. Use a new --quaero-db path or another --quaero-queue-name."
        )
    return pragmas


def _watch(scenario: Scenario, settings: Settings, pool: WorkerPool, producers: _Producers, tally: _Tally,
           monitor: sqlite3.Connection, t0: float, deadline: float, sample_interval: float, result: RunResult,
           on_progress: Callable[[Progress], None] | None, mark: Callable[..., None], watched: Any = None) -> None:
    queue = watched if watched is not None else Queue(
        monitor, settings.queue_name, visibility_timeout=settings.visibility_timeout, max_receive=settings.max_receive)
    queueing_marked = False
    while True:
        now = time.monotonic()
        # Ask the producers first, then count: a producer finishing between a count of an
        # empty queue and this question would otherwise read as "drained" before any job ran.
        producing = not producers.done
        tally.fold(pool.poll_events())
        try:
            sampled = time.monotonic()
            counts = queue.counts()
            # counts() reads every row of the queue: with a backlog of 100,000+ messages one
            # sample takes tens of milliseconds, so sample less often rather than spend more
            # than ~1/_SAMPLE_COST_SHARE of the run on watching.
            interval = max(sample_interval, _SAMPLE_COST_SHARE * (time.monotonic() - sampled))
        except sqlite3.OperationalError as exc:
            if classify(exc) is None:
                raise
            counts = None  # a rollback-journal writer can block this reader; skip the sample
        if not producing and not queueing_marked:
            # when it happened, not when this sample noticed it
            mark("queueing_completed", producers.finished_at)
            queueing_marked = True
        if counts is not None:
            result.queue_samples.append([round(now - t0, 4), counts.total, counts.visible, counts.in_flight])
            if on_progress is not None:
                on_progress(Progress(scenario.name, len(tally.finished), scenario.total_jobs, counts.total,
                                     now - t0, tally.live_busy))
            if not producing:
                if counts.total - counts.dead == 0:
                    mark("jobs_completed", tally.last_done)
                    return
                if len(tally.finished) >= producers.sent and counts.visible == 0:
                    # Every job finished yet messages remain: deletes that did not delete.
                    mark("jobs_completed", label="All jobs finished; undeleted messages remain")
                    return
        if now - t0 > deadline:
            result.timed_out = True
            mark("jobs_completed", label=f"Deadline of {deadline:g}s reached before the queue drained")
            return
        if pool.alive == 0 and not producing and (counts is None or counts.visible > 0 or counts.in_flight > 0):
            result.worker_errors.append("every worker stopped before the queue drained")
            mark("jobs_completed", label="Every worker stopped before the queue drained")
            return
        _nap(pool, producers, tally, now + (interval if counts is not None else sample_interval))


#: the monitor's own busy_timeout floor (ms), whatever the settings under test say
_MONITOR_BUSY_TIMEOUT_MS = 10_000
#: page cache of the monitor's own connection (KiB): enough for the index and tree interiors
_MONITOR_CACHE_KIB = 4096
#: The monitor takes a queue sample at most every sample_interval, and makes one sample cost
#: at most 1/_SAMPLE_COST_SHARE of the time between samples.
_SAMPLE_COST_SHARE = 20
#: Between samples the monitor folds worker events this often, so it sees the last job finish
#: within ~10 ms instead of up to a whole sample interval (0.25 s) later, which would add that
#: much to execution_time and make small runs' throughput noisy.
_FOLD_INTERVAL = 0.01


def _nap(pool: WorkerPool, producers: _Producers, tally: _Tally, until: float) -> None:
    """Wait until ``until``, folding events; wake early when the last enqueued job finishes."""
    def drained() -> bool:
        # every enqueued job finished, and every worker started (a staggered worker still due
        # must get its start recorded: the stagger criterion judges every worker)
        return producers.done and len(tally.finished) >= producers.sent and _workers_settled(tally)

    # Only the moment it happens: if it was already so at the last sample (yet messages
    # remain), waking early again would turn the wait into a busy loop of counts().
    was_drained = drained()
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _FOLD_INTERVAL))
        tally.fold(pool.poll_events())
        if not was_drained and drained():
            return


def _workers_settled(tally: _Tally) -> bool:
    """Every worker has started, or stopped without starting (it could not open its queue)."""
    return all(w.start_offset is not None or w.stop_offset is not None for w in tally.workers)


def _record(result: RunResult, tally: _Tally, producers: _Producers, checks: dict[str, Any]) -> None:
    retry = merge_stats(tally.retry_parts + producers.retry_parts)
    result.retry = {op: stats.as_dict() for op, stats in sorted(retry.items())}
    result.workers = tally.workers
    result.messages_enqueued = producers.sent
    result.messages_left = checks["messages_left"]
    result.dead_messages = checks["dead_messages"]
    # The database, not the workers' word, says what finished.
    result.jobs_completed = checks["children_completed"]
    result.jobs_failed = checks["children_failed"]
    result.children_found = checks["children_found"]
    result.duplicate_completions = len(tally.duplicates)
    result.duplicate_jobs = sorted(set(tally.duplicates))[:20]
    result.redeliveries = tally.redeliveries
    result.job_errors = tally.job_errors
    result.processing_times = tally.processing_times  # rounded as folded
    result.latencies = tally.latencies
    result.producer_errors = producers.errors[:50]
    result.worker_errors.extend(tally.errors[:50])
    result.integrity = checks
    result.python_version = result.python_version or sys.version.split()[0]
