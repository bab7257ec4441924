"""One worker's life: open its queue and store, wait its stagger, then receive, process, delete.

The loop is goqite's: when processing fails the message is left alone and comes back
after the visibility timeout, until ``max_receive``. A worker reports what happened as
small tuples (events) through one ``emit`` callable, so the pool measures threads and
processes alike and nothing has to be read back from a worker's memory afterwards:

* ``("started", index, wall_time, monotonic)``
* ``("job", index, job_id, outcome, received_at, done_at, latency, attempt)`` where
  outcome is ``completed``, ``duplicate``, ``retry`` (left for redelivery), ``failed``
  (gave up at max_receive) or ``error`` (a database error escaped the retries); a job
  the pool's cancel interrupted (:class:`~pytest_quaero.core.jobs.JobInterrupted`) reports
  nothing: it is not finished, and its message comes back after the visibility timeout
* ``("busy", index, code)`` each time SQLite raised a lock error (live progress)
* ``("error", index, text)`` for a failure outside any job
* ``("crashed", index, text, origin)`` when an exception ends the worker (``origin``: file, line, function)
* ``("instruments", index, exported)``: a spawned worker's lock and statement samples
  (:meth:`~pytest_quaero.core.instruments.Instruments.export`), just before it stops
* ``("stopped", index, monotonic, busy_seconds, retry_counters)``

:func:`process_entry` is the body of a spawned worker process; the same
:func:`worker_main` runs in a thread of the pool in thread mode.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sqlite3
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_quaero.core import db
from pytest_quaero.core.instruments import Instruments, active, operation
from pytest_quaero.core.jobs import Handler, Job, JobContext, JobInterrupted, StopSignal, decode_job
from pytest_quaero.core.ledger import acking, watching
from pytest_quaero.core.log import TemplateFormatter, WorkerLog, get_logger, logger
from pytest_quaero.core.observed import observing
from pytest_quaero.core.probe import MISSING, Probe
from pytest_quaero.core.queue import Message, Queue
from pytest_quaero.core.retry import Retrier, classify, database_error
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import JobStore

if TYPE_CHECKING:
    from pytest_quaero.core.postgresql.probe import PgProbe

__all__ = [
    "Endpoint",
    "EndpointFactory",
    "Event",
    "StopSignal",
    "WorkerSpec",
    "open_endpoint",
    "process_entry",
    "worker_main",
]

#: what a worker reports; the module docstring lists the shapes
Event = tuple[Any, ...]


@dataclass
class Endpoint:
    """What one worker or producer works through: a queue and a store, and how to close them."""

    queue: Any
    store: Any
    close: Callable[[], None]


def open_endpoint(db_path: str, settings: Settings) -> Endpoint:
    """The built-in queue and store on one fresh connection (so child + message share a transaction)."""
    if settings.backend == "postgresql":  # db_path is then the run's DSN
        from pytest_quaero.core.postgresql.backend import endpoint_parts  # deferred: the postgresql extra's

        pg_queue, pg_store, close = endpoint_parts(db_path, settings)
        return Endpoint(queue=pg_queue, store=pg_store, close=close)
    conn = db.connect(db_path, settings)
    queue = Queue(
        conn, settings.queue_name, visibility_timeout=settings.visibility_timeout, max_receive=settings.max_receive
    )
    store = JobStore(conn, begin_immediate=settings.begin_immediate)
    return Endpoint(queue=queue, store=store, close=conn.close)


EndpointFactory = Callable[[str, Settings], Endpoint]


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


def worker_main(
    spec: WorkerSpec, emit: Callable[[Event], None], stop: StopSignal, pool_started: float,
    cancel: StopSignal | None = None, instruments: Instruments | None = None,
) -> None:
    """One worker's whole life: wait its stagger, then receive/process/delete until stopped.

    ``stop`` ends the loop after the job in progress; ``cancel`` (handed to the handler as
    ``context.cancel``) cuts that job short too. ``instruments`` (a spawned worker's own)
    travel to the pool just before ``stopped``; in thread mode the run's are shared.
    """
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
        emit(("crashed", spec.index, f"could not open its queue/store: {type(exc).__name__}: {exc}", _origin(exc)))
        # its counters still travel: the busy error that stopped it counts like any other
        emit(("stopped", spec.index, time.monotonic(), 0.0, retrier.snapshot()))
        raise
    started = time.monotonic()
    emit(("started", spec.index, time.time(), started))
    log.info("Worker %d started successfully (%dms after pool start)", spec.index + 1,
             round((started - pool_started) * 1000))
    context = JobContext(spec.name, spec.index, settings, spec.db_path, cancel)
    checks = _Checks(spec.name, _probe(spec.db_path, settings))
    busy_seconds = 0.0
    try:
        while not stop.is_set():
            receive_started = time.time()
            try:
                message = retrier.call("queue_receive", endpoint.queue.receive, idle=_nothing)
            except Exception as exc:
                if database_error(exc) is None:
                    raise  # the queue itself broke: the worker crashes and says so
                emit(("error", spec.index, f"receive: {classify(exc) or type(exc).__name__}: {exc}"))
                stop.wait(settings.poll_interval)
                continue
            if message is None:
                checks.empty_receive(receive_started)
                stop.wait(settings.poll_interval)
                continue
            received_at = time.monotonic()
            outcome, job_id, enqueued_at = _process(message, endpoint, retrier, spec.handler, context, log, checks)
            done_at = time.monotonic()
            busy_seconds += done_at - received_at
            if outcome == "interrupted":
                continue  # not finished, nothing to count: the loop ends on the stop that came with the cancel
            # enqueued_at comes from the body _process decoded: one json.loads per job, not two.
            latency = max(0.0, time.time() - enqueued_at) if enqueued_at is not None else 0.0
            emit(("job", spec.index, job_id, outcome, received_at, done_at, latency, message.received))
    except BaseException as exc:  # a crashed worker must be reported, not vanish
        emit(("error", spec.index, f"worker crashed: {type(exc).__name__}: {exc}"))
        if not getattr(exc, "injected_fault", False):
            emit(("crashed", spec.index, f"{type(exc).__name__}: {exc}", _origin(exc)))
        raise
    finally:
        if instruments is not None:
            emit(("instruments", spec.index, instruments.export()))
        emit(("stopped", spec.index, time.monotonic(), busy_seconds, retrier.snapshot()))
        checks.probe.close()
        endpoint.close()


def _probe(db_path: str, settings: Settings) -> Probe | PgProbe:
    if settings.backend == "postgresql":
        from pytest_quaero.core.postgresql.probe import PgProbe  # deferred: the postgresql extra's

        return PgProbe(db_path, settings)
    return Probe(db_path, settings)


def _origin(exc: BaseException) -> str:
    """Where an exception was raised: the innermost frame, ``queue.py:42 in receive``."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def _nothing(message: object) -> bool:
    """An empty receive: a poll, not part of any job's work."""
    return message is None


class _Checks:
    """A worker's checks of what its queue and store really did (:mod:`~pytest_quaero.core.ledger`).

    Each finding goes to the run's instruments (a spawned worker's own, merged by the pool),
    counted and with a few examples named; the run turns them into criteria verdicts.
    """

    def __init__(self, worker: str, probe: Probe | PgProbe) -> None:
        self.worker, self.probe = worker, probe

    @staticmethod
    def note(kind: str, example: str | None = None) -> None:
        instruments = active()
        if instruments is not None:
            instruments.note(kind, example)

    def empty_receive(self, started_wall: float) -> None:
        found = self.probe.stall(started_wall)
        if found is not None:
            kind, message_id = found
            self.note(f"stall_{kind}", f"{self.worker}: receive returned nothing while {message_id} was visible "
                                       f"({kind.replace('_', ' ')})")

    def ack(self, message_id: str, verdict: str, removed: list[str]) -> None:
        if verdict == "wrong_id":
            others = ", ".join(sorted(set(removed) - {message_id}))
            self.note("ack_wrong_id", f"{self.worker}: ack of {message_id} removed {others}")
        elif verdict == "removed_nothing":
            # removed by someone else first (a redelivered copy's ack) is stale, not lost
            if self.probe.still_queued(message_id):
                self.note("ack_removed_nothing", f"{self.worker}: ack of {message_id} removed nothing; still queued")
            else:
                self.note("ack_stale", f"{self.worker}: ack of {message_id} found it already gone")
        self.note("ack_checked" if verdict != "unchecked" else "ack_unchecked")

    def silent_write(self, what: str, job_id: str) -> bool:
        """A store call changed no row: True (and noted) unless the job had already finished."""
        status = self.probe.job_status(job_id)
        if status is None or status in ("completed", "failed"):
            return False  # a redelivered job that finished already (a duplicate), or no way to tell
        why = "no such job row" if status == MISSING else f"the job is still {status!r}"
        self.note("silent_write", f"{self.worker}: {what} of {job_id} changed no row ({why})")
        return True


def _process(
    message: Message, endpoint: Endpoint, retrier: Retrier, handler: Handler, context: JobContext, log: WorkerLog,
    checks: _Checks,
) -> tuple[str, str, float | None]:
    """Run one received job: ``(outcome, job id, enqueued_at)``; enqueued_at is None if undecodable."""
    try:
        job = decode_job(message)
    except (ValueError, KeyError) as exc:
        log.error("Undecodable message %s left for redelivery: %s", message.id, exc)
        return "error", message.id, None
    outcome = _run_job(job, message, endpoint, retrier, handler, context, log, checks)
    return outcome, job.job_id, job.enqueued_at


def _run_job(
    job: Job, message: Message, endpoint: Endpoint, retrier: Retrier, handler: Handler, context: JobContext,
    log: WorkerLog, checks: _Checks,
) -> str:
    store, queue = endpoint.store, endpoint.queue
    log.debug("Processing message %s (attempt %d)", job.job_id, job.attempt)
    try:
        with watching() as marked:
            retrier.call("save_job", lambda: store.mark_running(job.job_id), job.job_id)
        if marked.observed and not marked.rows:
            checks.silent_write("status update", job.job_id)
        with operation("handler"):
            handler(job, context)
    except JobInterrupted:
        log.info("Job %s interrupted by the pool's stop: left unfinished, its message comes back after the "
                 "visibility timeout", job.job_id)
        return "interrupted"
    except sqlite3.Error as exc:
        log.error("Database error on %s, message left for redelivery: %s", job.job_id, exc)
        return "error"
    except Exception as exc:  # noqa: BLE001 - whatever a user's handler raises, goqite leaves the message for redelivery
        if database_error(exc) is not None:  # an ORM's own error type wrapping sqlite3's
            log.error("Database error on %s, message left for redelivery: %s", job.job_id, exc)
            return "error"
        return _handler_failed(job, message, exc, endpoint, retrier, context, log)
    try:
        with watching() as finished:
            counted = retrier.call(
                "progress_update", lambda: store.finish_child(job.job_id, job.parent_id), job.job_id
            )
        with acking(message.id) as ack:
            retrier.call("queue_delete", lambda: queue.delete(message.id), job.job_id)
    except Exception as exc:
        if database_error(exc) is None:
            raise
        log.error("Database error finishing %s, message left for redelivery: %s", job.job_id, exc)
        return "error"
    checks.ack(message.id, ack.ack_verdict(), ack.removed)
    # A completion that changed no row finished nothing: a job error, whatever the store returned.
    if finished.observed and not finished.rows and checks.silent_write("completion", job.job_id):
        log.error("Completion of %s changed no row: the job is not finished", job.job_id)
        return "error"
    if not counted:
        log.warning("Job %s was already finished: processed twice", job.job_id)
        return "duplicate"
    log.debug("Completed job %s", job.job_id)
    return "completed"


def _handler_failed(
    job: Job, message: Message, exc: Exception, endpoint: Endpoint, retrier: Retrier, context: JobContext,
    log: WorkerLog,
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
    except Exception as db_exc:
        if database_error(db_exc) is None:
            raise
        log.error("Database error recording the failure of %s: %s", job.job_id, db_exc)
        return "error"
    return "retry"


def process_entry(spec: WorkerSpec, channel: Connection[Any, Any], stop: StopSignal,
                  cancel: StopSignal | None = None) -> None:
    """Body of a spawned worker process: handshake, then the same loop as a thread.

    Ctrl-C in a terminal reaches the whole process group: the worker ignores it and stops
    when the pool (whose process got the KeyboardInterrupt) sets ``stop``, instead of dying
    mid-job with a traceback of its own. A worker whose pool process died (killed) stops,
    its job cut short, as if the pool had cancelled.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        stop = _StopOrOrphaned(stop, parent)
        cancel = _StopOrOrphaned(cancel, parent) if cancel is not None else None
    if spec.log_path:
        handler = logging.FileHandler(spec.log_path, encoding="utf-8")
        handler.setFormatter(TemplateFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # a spawned child has no pytest capture to hand lines to
    channel.send(("ready", spec.index))
    pool_started = channel.recv()
    with observing() as instruments:
        instruments.queue_name = spec.settings.queue_name
        worker_main(spec, channel.send, stop, pool_started, cancel, instruments)


class _StopOrOrphaned:
    """A process worker's stop (or cancel) signal: set by the pool, or by the pool's process dying."""

    _SLICE = 0.5  # how soon an orphaned worker notices (seconds)

    def __init__(self, stop: StopSignal, parent: BaseProcess) -> None:
        self._stop, self._parent = stop, parent

    def is_set(self) -> bool:
        return self._stop.is_set() or not self._parent.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = self._SLICE if deadline is None else min(self._SLICE, deadline - time.monotonic())
            if left <= 0:
                return self.is_set()
            if self._stop.wait(left) or not self._parent.is_alive():
                return True
