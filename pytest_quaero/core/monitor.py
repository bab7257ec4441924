"""The monitor of a run: folds what the workers report and watches the queue until it drains.

The run's own thread does this while the producers create jobs and the pool drains
them: :class:`Tally` counts the workers' events as they arrive, :func:`watch` samples
the queue (for the progress display and the queue-length figures) and decides when
the run is over: the queue drained, every job finished yet messages remain, the
deadline passed, or every worker stopped. The monitor is the harness, not the system
under test, so its own connection (:func:`open_monitor`) waits for locks patiently.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_quaero.core import db
from pytest_quaero.core.metrics import RunResult, WorkerRecord
from pytest_quaero.core.pool import WorkerPool
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.retry import classify
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.seed import Producers
from pytest_quaero.core.settings import Settings

__all__ = ["Progress", "Tally", "open_monitor", "watch"]


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
    #: the run's database (``sqlite``, ``postgresql``): what the display calls those errors
    backend: str = "sqlite"

    @property
    def jobs_per_second(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


class Tally:
    """Folds worker events into counters as they arrive."""

    def __init__(self, workers: int, t0: float, names: Sequence[str] | None = None) -> None:
        self.t0 = t0
        # an external or mixed pool names its own workers (``go-1``, ``JobWorker-3``)
        names = list(names) if names else [f"JobWorker-{i + 1}" for i in range(workers)]
        self.workers = [WorkerRecord(index=i, name=name) for i, name in enumerate(names)]
        #: every job that reached completed or failed; ``completed`` is derived from it (one set
        #: of ids, not two: at 150,000 jobs a second set would cost ~6 MB)
        self.finished: set[str] = set()
        self.failed: set[str] = set()
        self.duplicates: list[str] = []
        self.processing_times: list[float] = []
        #: when each completed job finished (monotonic): the run splits itself by these to measure its noise
        self.done_at: list[float] = []
        self.latencies: list[float] = []
        self.redeliveries = 0
        self.job_errors = 0
        self.errors: list[str] = []
        #: workers an exception ended: worker, error, where it was raised
        self.crashed: list[dict[str, str]] = []
        self.retry_parts: list[dict[str, dict[str, Any]]] = []
        #: spawned workers' instruments (thread workers measure into the run's own)
        self.instrument_parts: list[dict[str, Any]] = []
        self.first_received: float | None = None
        #: when the latest job finished (``time.monotonic()``): the timeline's jobs-completed phase
        self.last_done: float | None = None
        self.live_busy = 0
        #: how late each of the monitor's short sleeps woke (seconds): what the machine's scheduler
        #: (and, with thread workers, the GIL) does to a thread that wants to run, during this run
        self.wake_delays: list[float] = []

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
                    self.done_at.append(done_at)
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
            elif kind == "instruments":
                self.instrument_parts.append(event[2])
            elif kind == "error":
                self.errors.append(f"{self._name(index)}: {event[2]}")
            elif kind == "crashed":
                self.crashed.append({"worker": self._name(index), "error": event[2], "origin": event[3]})

    def _name(self, index: int) -> str:
        return self.workers[index].name if 0 <= index < len(self.workers) else f"JobWorker-{index + 1}"


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


def open_monitor(db_path: str, settings: Settings) -> Any:
    """The monitor's own connection: patient with locks, frugal with its page cache."""
    if settings.backend == "postgresql":  # db_path is then the run's DSN
        from pytest_quaero.core.postgresql.backend import open_monitor as open_pg_monitor  # the extra's

        return open_pg_monitor(db_path, settings)
    # It waits for locks however short the settings make busy_timeout (a busy_timeout=0 run
    # must be judged, not crash on its own observer meeting a WAL reset).
    conn = db.connect(db_path, dataclasses.replace(
        settings, busy_timeout_ms=max(settings.busy_timeout_ms, _MONITOR_BUSY_TIMEOUT_MS)))
    # It only counts the queue and, after the drain, runs the integrity SQL: scans that would
    # fill a page cache of settings.cache_size_mb (64 MB) with pages read once; at 150,000 jobs
    # that was ~60 MB of the run's peak memory. Workers keep their setting.
    db.set_cache_size(conn, min(_MONITOR_CACHE_KIB, settings.cache_size_mb * 1024))
    return conn


def watch(scenario: Scenario, settings: Settings, pool: WorkerPool, producers: Producers, tally: Tally,
          monitor: Any, t0: float, deadline: float, sample_interval: float, result: RunResult,
          on_progress: Callable[[Progress], None] | None, mark: Callable[..., None], watched: Any = None) -> None:
    """Sample the queue and fold events until the run is over; marks how it ended on the timeline.

    ``watched`` is a user's own queue (``pytest_quaero_make_queue``), counted through its
    ``counts()``; otherwise the goqite table is counted on ``monitor``.
    """
    queue = watched if watched is not None else _monitor_queue(settings)(
        monitor, settings.queue_name, visibility_timeout=settings.visibility_timeout, max_receive=settings.max_receive)
    queueing_marked = False
    due = time.monotonic()
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
                                     now - t0, tally.live_busy, settings.backend))
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
        # The next sample is due one interval after the last one was due, not after this one ended:
        # samples stay on the stated cadence instead of drifting later by each sample's own cost.
        due = max(due + (interval if counts is not None else sample_interval), time.monotonic())
        _nap(pool, producers, tally, due)


def _monitor_queue(settings: Settings) -> Any:
    """The queue class the monitor counts with: goqite's table on SQLite or on PostgreSQL."""
    if settings.backend == "postgresql":
        from pytest_quaero.core.postgresql.queue import PgQueue  # deferred: the postgresql extra's

        return PgQueue
    return Queue


def _nap(pool: WorkerPool, producers: Producers, tally: Tally, until: float) -> None:
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
        nap = min(left, _FOLD_INTERVAL)
        slept = time.monotonic()
        time.sleep(nap)
        tally.wake_delays.append(max(0.0, time.monotonic() - slept - nap))
        tally.fold(pool.poll_events())
        if not was_drained and drained():
            return


def _workers_settled(tally: Tally) -> bool:
    """Every worker has started, or stopped without starting (it could not open its queue)."""
    return all(w.start_offset is not None or w.stop_offset is not None for w in tally.workers)
