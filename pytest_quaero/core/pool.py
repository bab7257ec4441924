"""A staggered worker pool draining the queue: threads or processes, one connection each.

Worker k starts ``k x stagger`` after the pool starts and records when it really did
(:mod:`pytest_quaero.core.worker` is one worker's loop and the events it reports). The
pool starts the workers, hands their events to the run through :meth:`WorkerPool.poll_events`
and stops them, the same way for threads and for spawned processes.

The job types (:mod:`pytest_quaero.core.jobs`) and the endpoint a worker opens
(:mod:`pytest_quaero.core.worker`) are importable from here too, where the extension
API and user code have always found them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue as queue_module
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any, cast

from pytest_quaero.core.jobs import Handler, Job, JobContext, JobInterrupted, SimulatedWork, decode_job, encode_job
from pytest_quaero.core.log import get_logger
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.worker import (
    Endpoint,
    EndpointFactory,
    Event,
    WorkerSpec,
    open_endpoint,
    process_entry,
    worker_main,
)

__all__ = [
    "Endpoint",
    "EndpointFactory",
    "Handler",
    "Job",
    "JobContext",
    "JobInterrupted",
    "SimulatedWork",
    "WorkerPool",
    "WorkerSpec",
    "decode_job",
    "encode_job",
    "open_endpoint",
]


class WorkerPool:
    """Starts, watches and stops the workers of one run.

    ``poll_events()`` hands over whatever the workers reported since the last call;
    ``stop()`` lets each worker finish its job and waits for them; ``stop(cancel=True)``
    also cuts jobs in progress short when their handler waits on ``context.cancel`` (the
    simulated work does): they stay unfinished
    (:class:`~pytest_quaero.core.jobs.JobInterrupted`), so an interrupted run stops in
    well under a second however long its jobs are.
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
        self._processes: list[BaseProcess] = []
        self._channels: list[Connection[Any, Any]] = []
        self._stop: threading.Event | ProcessEvent | None = None
        self._cancel: threading.Event | ProcessEvent | None = None
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
            stop, cancel = self._stop, self._cancel = threading.Event(), threading.Event()
            self.started_at = time.monotonic()
            for index in range(self.settings.workers):
                thread = threading.Thread(
                    target=self._thread_entry, args=(self._spec(index), stop, cancel),
                    name=f"quaero-worker-{index + 1}", daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        assert self.started_at is not None
        return self.started_at

    def _thread_entry(self, spec: WorkerSpec, stop: threading.Event, cancel: threading.Event) -> None:
        # whatever ended the worker, worker_main reported it as an event; keep the interpreter quiet
        with contextlib.suppress(BaseException):
            worker_main(spec, self._events.put, stop, self.started_at or time.monotonic(), cancel)

    def _start_processes(self) -> None:
        try:
            self._spawn()
        except BaseException:
            # Ctrl-C (or a worker that could not load) while spawning: none has touched the
            # database yet (they wait for the pool's start time), so none is left behind.
            for spawned in self._processes:
                spawned.kill()
            for spawned in self._processes:
                spawned.join(5)
            raise

    def _spawn(self) -> None:
        # spawn, never fork: a forked child would inherit open SQLite state and pytest's threads.
        context = multiprocessing.get_context("spawn")
        self._stop, self._cancel = context.Event(), context.Event()
        for index in range(self.settings.workers):
            parent_end, child_end = context.Pipe(duplex=True)
            process = context.Process(
                target=process_entry, args=(self._spec(index), child_end, self._stop, self._cancel),
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
        open_channels = list(self._channels)
        while open_channels:
            for ready in wait(open_channels, timeout=0.5):
                channel = cast("Connection[Any, Any]", ready)  # wait() hands back the channels it was given
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
    def processes(self) -> list[BaseProcess]:
        """The worker processes (process mode), e.g. for fault injection."""
        return list(self._processes)

    def cancel(self) -> None:
        """Stop the workers now, cutting the jobs in progress short; :meth:`stop` waits for them."""
        if self._stop is not None and self._cancel is not None:
            # stop first: a worker cut short must find the loop ended, not take the next message
            self._stop.set()
            self._cancel.set()

    def stop(self, timeout: float = 60.0, *, cancel: bool = False) -> None:
        """Stop the workers after their current job (with ``cancel``, cut that job short too),
        and wait up to ``timeout`` for them.

        A worker process still busy then is killed (its job stays unfinished, its message
        comes back after the visibility timeout); a thread cannot be, so it is named in the
        log and left to end with the interpreter (worker threads are daemons).
        """
        if self._stop is None:
            return
        if cancel:
            self.cancel()
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:
            self._log.warning("%d worker threads still busy %.0fs after the stop (a handler that does not wait "
                              "on context.cancel): %s", len(stuck), timeout, ", ".join(stuck[:10]))
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                self._log.warning("Worker process %s still busy %.0fs after the stop: killed", process.name,
                                  timeout)
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

