"""A staggered worker pool draining the queue: threads or processes, one connection each.

Worker k starts ``k x stagger`` after the pool starts and records when it really did.
Its loop is goqite's: receive, process, delete; when processing fails the message is
left alone and comes back after the visibility timeout, until ``max_receive``.

Workers report what happened as small tuples (events) through one channel, so the
run measures threads and processes alike and nothing has to be read back from a
worker's memory afterwards:

* ``("started", index, wall_time, monotonic)``
* ``("job", index, job_id, outcome, received_at, done_at, latency, attempt)`` where
  outcome is ``completed``, ``duplicate``, ``retry`` (left for redelivery), ``failed``
  (gave up at max_receive) or ``error`` (a database error escaped the retries)
* ``("busy", index, code)`` each time SQLite raised a lock error (live progress)
* ``("error", index, text)`` for a failure outside any job
* ``("stopped", index, monotonic, busy_seconds, retry_counters)``
"""

from __future__ import annotations

import json
import multiprocessing
import queue as queue_module
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_quaero.core import db
from pytest_quaero.core.log import get_logger
from pytest_quaero.core.queue import Message, Queue
from pytest_quaero.core.retry import Retrier, classify
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import JobStore

__all__ = [
    "Endpoint",
    "Job",
    "JobContext",
    "SimulatedWork",
    "WorkerPool",
    "decode_job",
    "encode_job",
    "open_endpoint",
]

Event = tuple[Any, ...]


@dataclass(frozen=True)
class Job:
    """A received child job: what a handler gets to work on."""

    job_id: str
    parent_id: str
    url: str
    job_type: str
    message_id: str
    attempt: int
    enqueued_at: float
    body: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class JobContext:
    """Where a job runs: the worker, its settings, and the database it works on."""

    worker: str
    worker_index: int
    settings: Settings
    db_path: str


# json.dumps() with non-default separators builds a new JSONEncoder on every call; one shared
# encoder with the same options writes the same bytes for a fraction of the cost per message.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode_job(job_id: str, parent_id: str, url: str, job_type: str = "crawler_url") -> bytes:
    """The message body: JSON, as Quaero enqueued its JobMessage."""
    return _ENCODER.encode(
        {"id": job_id, "type": job_type, "parent_id": parent_id, "url": url, "created_at": time.time()}
    ).encode()


def decode_job(message: Message) -> Job:
    body = json.loads(message.body)
    return Job(
        job_id=body["id"],
        parent_id=body.get("parent_id", ""),
        url=body.get("url", ""),
        job_type=body.get("type", "crawler_url"),
        message_id=message.id,
        attempt=message.received,
        enqueued_at=float(body.get("created_at", 0.0)),
        body=body,
    )


class SimulatedWork:
    """The default job handler: sleep a seeded, per-job uniform time in ``[low, high]``.

    The time depends only on the seed and the job id, so a rerun with the same seed
    does the same work whichever worker gets which job. Picklable, for process mode.
    """

    def __init__(self, low: float, high: float, seed: int = 0) -> None:
        self.low, self.high, self.seed = low, high, seed

    def duration(self, job_id: str) -> float:
        if self.high <= self.low:
            return self.low
        return random.Random(f"{self.seed}:{job_id}").uniform(self.low, self.high)

    def __call__(self, job: Job, context: JobContext) -> None:
        seconds = self.duration(job.job_id)
        if seconds > 0:
            time.sleep(seconds)


@dataclass
class Endpoint:
    """What one worker or producer works through: a queue and a store, and how to close them."""

    queue: Any
    store: Any
    close: Callable[[], None]


def open_endpoint(db_path: str, settings: Settings) -> Endpoint:
    """The built-in queue and store on one fresh connection (so child + message share a transaction)."""
    conn = db.connect(db_path, settings)
    queue = Queue(
        conn, settings.queue_name, visibility_timeout=settings.visibility_timeout, max_receive=settings.max_receive
    )
    store = JobStore(conn, begin_immediate=settings.begin_immediate)
    return Endpoint(queue=queue, store=store, close=conn.close)


EndpointFactory = Callable[[str, Settings], Endpoint]
Handler = Callable[[Job, JobContext], None]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, picklable so a process worker can be spawned from it."""

    index: int
    db_path: str
    settings: Settings
    handler: Handler
    endpoint_factory: EndpointFactory
    log_path: str | None = None

    @property
    def name(self) -> str:
        return f"JobWorker-{self.index + 1}"


def worker_main(spec: WorkerSpec, emit: Callable[[Event], None], stop: Any, pool_started: float) -> None:
    """One worker's whole life: wait its stagger, then receive/process/delete until stopped."""
    settings = spec.settings
    log = get_logger(spec.name)
    deadline = pool_started + spec.index * settings.stagger
    if stop.wait(max(0.0, deadline - time.monotonic())):
        return
    retrier = Retrier(settings.retry_attempts, settings.retry_backoff,
                      busy_timeout_ms=settings.busy_timeout_ms, name=spec.name,
                      on_busy=lambda code: emit(("busy", spec.index, code)))
    try:
        # Opening can meet a lock too (PRAGMAs in rollback-journal mode): retried and counted.
        endpoint = retrier.call("connect", lambda: spec.endpoint_factory(spec.db_path, settings))
    except Exception as exc:  # a worker that cannot open its queue must say so, not vanish
        emit(("error", spec.index, f"could not open queue/store: {type(exc).__name__}: {exc}"))
        # its counters still travel: the busy error that stopped it counts like any other
        emit(("stopped", spec.index, time.monotonic(), 0.0, retrier.snapshot()))
        raise
    started = time.monotonic()
    emit(("started", spec.index, time.time(), started))
    log.info("Worker %d started successfully (%dms after pool start)", spec.index + 1,
             round((started - pool_started) * 1000))
    context = JobContext(spec.name, spec.index, settings, spec.db_path)
    busy_seconds = 0.0
    try:
        while not stop.is_set():
            try:
                message = retrier.call("queue_receive", endpoint.queue.receive)
            except sqlite3.Error as exc:
                emit(("error", spec.index, f"receive: {classify(exc) or type(exc).__name__}: {exc}"))
                stop.wait(settings.poll_interval)
                continue
            if message is None:
                stop.wait(settings.poll_interval)
                continue
            received_at = time.monotonic()
            outcome, job_id, enqueued_at = _process(message, endpoint, retrier, spec.handler, context, log)
            done_at = time.monotonic()
            busy_seconds += done_at - received_at
            # enqueued_at comes from the body _process decoded: one json.loads per job, not two.
            latency = max(0.0, time.time() - enqueued_at) if enqueued_at is not None else 0.0
            emit(("job", spec.index, job_id, outcome, received_at, done_at, latency, message.received))
    except BaseException as exc:  # a crashed worker must be reported, not vanish
        emit(("error", spec.index, f"worker crashed: {type(exc).__name__}: {exc}"))
        raise
    finally:
        emit(("stopped", spec.index, time.monotonic(), busy_seconds, retrier.snapshot()))
        endpoint.close()


def _process(
    message: Message, endpoint: Endpoint, retrier: Retrier, handler: Handler, context: JobContext, log: Any
) -> tuple[str, str, float | None]:
    """Run one received job: ``(outcome, job id, enqueued_at)``; enqueued_at is None if undecodable."""
    try:
        job = decode_job(message)
    except (ValueError, KeyError) as exc:
        log.error("Undecodable message %s left for redelivery: %s", message.id, exc)
        return "error", message.id, None
    outcome = _run_job(job, message, endpoint, retrier, handler, context, log)
    return outcome, job.job_id, job.enqueued_at


def _run_job(
    job: Job, message: Message, endpoint: Endpoint, retrier: Retrier, handler: Handler, context: JobContext, log: Any
) -> str:
    store, queue = endpoint.store, endpoint.queue
    log.debug("Processing message %s (attempt %d)", job.job_id, job.attempt)
    try:
        retrier.call("save_job", lambda: store.mark_running(job.job_id), job.job_id)
        handler(job, context)
    except sqlite3.Error as exc:
        log.error("Database error on %s, message left for redelivery: %s", job.job_id, exc)
        return "error"
    except Exception as exc:  # the handler failed: goqite leaves the message for redelivery
        return _handler_failed(job, message, exc, endpoint, retrier, context, log)
    try:
        counted = retrier.call(
            "progress_update", lambda: store.finish_child(job.job_id, job.parent_id), job.job_id
        )
        retrier.call("queue_delete", lambda: queue.delete(message.id), job.job_id)
    except sqlite3.Error as exc:
        log.error("Database error finishing %s, message left for redelivery: %s", job.job_id, exc)
        return "error"
    if not counted:
        log.warning("Job %s was already finished: processed twice", job.job_id)
        return "duplicate"
    log.debug("Completed job %s", job.job_id)
    return "completed"


def _handler_failed(
    job: Job, message: Message, exc: Exception, endpoint: Endpoint, retrier: Retrier, context: JobContext, log: Any
) -> str:
    error = f"{type(exc).__name__}: {exc}"
    final = message.received >= context.settings.max_receive
    store = endpoint.store
    try:
        if final:
            log.error("Job %s failed on its last delivery (%d/%d): %s", job.job_id, message.received,
                      context.settings.max_receive, error)
            retrier.call("progress_update",
                         lambda: store.finish_child(job.job_id, job.parent_id, failed=True, error=error), job.job_id)
            return "failed"
        log.warning("Job %s failed (delivery %d/%d), left for redelivery: %s", job.job_id, message.received,
                    context.settings.max_receive, error)
        retrier.call("save_job", lambda: store.record_attempt_failure(job.job_id, error), job.job_id)
    except sqlite3.Error as db_exc:
        log.error("Database error recording the failure of %s: %s", job.job_id, db_exc)
        return "error"
    return "retry"


# ------------------------------------------------------------------ process mode


def _process_entry(spec: WorkerSpec, channel: Any, stop: Any) -> None:
    """Body of a spawned worker process: handshake, then the same loop as a thread."""
    import logging

    from pytest_quaero.core.log import TemplateFormatter, logger

    if spec.log_path:
        handler = logging.FileHandler(spec.log_path, encoding="utf-8")
        handler.setFormatter(TemplateFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # a spawned child has no pytest capture to hand lines to
    channel.send(("ready", spec.index))
    pool_started = channel.recv()
    worker_main(spec, channel.send, stop, pool_started)


class WorkerPool:
    """Starts, watches and stops the workers of one run.

    ``poll_events()`` hands over whatever the workers reported since the last call;
    ``stop()`` asks every worker to finish its current job and waits for it.
    """

    def __init__(
        self,
        db_path: str,
        settings: Settings,
        *,
        handler: Handler | None = None,
        endpoint_factory: EndpointFactory = open_endpoint,
        log_path: str | None = None,
    ) -> None:
        self.db_path = str(db_path)
        self.settings = settings
        self.handler = handler or SimulatedWork(*settings.job_time, seed=settings.seed)
        self.endpoint_factory = endpoint_factory
        self.log_path = log_path
        self.started_at: float | None = None
        self._events: queue_module.SimpleQueue[Event] = queue_module.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._processes: list[Any] = []
        self._channels: list[Any] = []
        self._stop: Any = None
        self._collector: threading.Thread | None = None
        self._log = get_logger("WorkerPool")

    @property
    def mode(self) -> str:
        return self.settings.worker_mode

    def _spec(self, index: int) -> WorkerSpec:
        return WorkerSpec(index, self.db_path, self.settings, self.handler, self.endpoint_factory, self.log_path)

    def start(self) -> float:
        """Start every worker; returns the pool's start time (``time.monotonic()``)."""
        if self.started_at is not None:
            raise RuntimeError("the pool is already running")
        self._log.info("Starting worker pool with %d workers (%s mode, %dms stagger)", self.settings.workers,
                       self.mode, round(self.settings.stagger * 1000))
        if self.mode == "process":
            self._start_processes()
        else:
            self._stop = threading.Event()
            self.started_at = time.monotonic()
            for index in range(self.settings.workers):
                thread = threading.Thread(
                    target=self._thread_entry, args=(self._spec(index),), name=f"quaero-worker-{index + 1}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        assert self.started_at is not None
        return self.started_at

    def _thread_entry(self, spec: WorkerSpec) -> None:
        try:
            worker_main(spec, self._events.put, self._stop, self.started_at or time.monotonic())
        except BaseException:  # reported by worker_main already; keep the interpreter quiet
            pass

    def _start_processes(self) -> None:
        # spawn, never fork: a forked child would inherit open SQLite state and pytest's threads.
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        for index in range(self.settings.workers):
            parent_end, child_end = context.Pipe(duplex=True)
            process = context.Process(
                target=_process_entry, args=(self._spec(index), child_end, self._stop),
                name=f"quaero-worker-{index + 1}", daemon=True,
            )
            process.start()
            child_end.close()
            self._processes.append(process)
            self._channels.append(parent_end)
        for index, channel in enumerate(self._channels):
            try:
                if not channel.poll(60):
                    raise RuntimeError(f"worker process {index + 1} did not start within 60s")
                channel.recv()
            except (EOFError, OSError):
                code = self._processes[index].exitcode
                for process in self._processes:
                    process.kill()
                raise RuntimeError(
                    f"worker process {index + 1} exited (code {code}) before it was ready; "
                    "its handler or queue factory could not be loaded in a spawned process"
                ) from None
        # Start the stagger clock only once every process is ready, so spawn time is not counted.
        self.started_at = time.monotonic()
        for channel in self._channels:
            channel.send(self.started_at)
        self._collector = threading.Thread(target=self._collect, name="quaero-collector", daemon=True)
        self._collector.start()

    def _collect(self) -> None:
        from multiprocessing.connection import wait

        open_channels = list(self._channels)
        while open_channels:
            for channel in wait(open_channels, timeout=0.5):
                try:
                    self._events.put(channel.recv())
                except (EOFError, OSError):
                    open_channels.remove(channel)

    def poll_events(self) -> list[Event]:
        """Every event reported since the last call."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue_module.Empty:
                return events

    @property
    def alive(self) -> int:
        workers = self._processes if self.mode == "process" else self._threads
        return sum(1 for worker in workers if worker.is_alive())

    @property
    def processes(self) -> list[Any]:
        """The worker processes (process mode), e.g. for fault injection."""
        return list(self._processes)

    def stop(self, timeout: float = 60.0) -> None:
        """Ask every worker to finish its current job, and wait for them."""
        if self._stop is None:
            return
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        if self._collector is not None:
            self._collector.join(max(1.0, deadline - time.monotonic()))
        for channel in self._channels:
            channel.close()
        self._log.info("Worker pool stopped")

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
