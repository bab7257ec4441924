"""A worker pool in any language: a command the run starts, talks to and stops.

``--quaero-worker-command`` replaces the built-in workers (or, with
``--quaero-builtin-workers``, joins them on the same database). The plugin prepares and
seeds the file as for its own pool, then starts the command (one process running every
worker, or one per worker) with every setting in ``QUAERO_*`` environment variables,
waits for each process's ``hello``, writes the start line (the pool's clock) on its
stdin, reads its events (:mod:`pytest_quaero.core.events`) while the run watches the
queue, and stops it with SIGTERM, then SIGKILL after the grace period.

Whatever goes wrong with the command is one paragraph, never a traceback, and the
database is kept: not found, exits at start (the end of its stderr is shown), no hello in
time, a line that is not protocol (its number and text), another protocol version. A
process that ends mid-run leaves its workers crashed (Worker Health fails) and the jobs
they had claimed unfinished in the database, redelivered after the visibility timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue as queue_module
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pytest_quaero.core.errors import RunError
from pytest_quaero.core.events import EventReader, ProtocolError
from pytest_quaero.core.gobuild import resolve_command
from pytest_quaero.core.jobs import Handler
from pytest_quaero.core.log import get_logger
from pytest_quaero.core.pool import WorkerPool
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.worker import EndpointFactory, Event, WorkerSpec, open_endpoint

__all__ = ["ExternalPool", "external_pool", "worker_environment"]

#: lines of a command's stderr quoted when it fails
_STDERR_LINES = 12


def worker_environment(settings: Settings, db_path: str, base: int, count: int) -> dict[str, str]:
    """The ``QUAERO_*`` variables a worker process reads (the README's table)."""
    low, high = settings.job_time
    disabled = [name for name, off in (("wal", not settings.wal), ("busy_timeout", settings.busy_timeout_ms == 0),
                                       ("retries", settings.retry_attempts == 1), ("stagger", settings.stagger == 0),
                                       ("immediate", not settings.begin_immediate)) if off]
    return {
        "QUAERO_PROTOCOL": "1",
        # the SQLite file, or with --quaero-backend=postgresql the run's DSN (its own schema on the search_path)
        "QUAERO_BACKEND": getattr(settings, "backend", "sqlite") or "sqlite",
        "QUAERO_DB_PATH": db_path,
        "QUAERO_QUEUE_NAME": settings.queue_name,
        "QUAERO_WORKERS": str(count),
        "QUAERO_WORKER_INDEX_BASE": str(base),
        "QUAERO_POOL_WORKERS": str(settings.workers + settings.builtin_workers),
        "QUAERO_STAGGER_MS": f"{settings.stagger * 1000:g}",
        "QUAERO_POLL_INTERVAL_MS": f"{settings.poll_interval * 1000:g}",
        "QUAERO_BUSY_TIMEOUT_MS": str(settings.busy_timeout_ms),
        "QUAERO_JOURNAL_MODE": "WAL" if settings.wal else "DELETE",
        "QUAERO_SYNCHRONOUS": settings.synchronous,
        "QUAERO_CACHE_SIZE_MB": str(settings.cache_size_mb),
        "QUAERO_BEGIN_IMMEDIATE": "true" if settings.begin_immediate else "false",
        "QUAERO_RETRY_ATTEMPTS": str(settings.retry_attempts),
        "QUAERO_RETRY_BACKOFF_MS": f"{settings.retry_backoff * 1000:g}",
        # Quaero's delete policy: 3 tries from twice the store's first delay (200 ms at the defaults)
        "QUAERO_DELETE_RETRY_ATTEMPTS": str(min(3, settings.retry_attempts)),
        "QUAERO_DELETE_RETRY_BACKOFF_MS": f"{settings.retry_backoff * 2000:g}",
        "QUAERO_VISIBILITY_TIMEOUT_MS": f"{settings.visibility_timeout * 1000:g}",
        "QUAERO_MAX_RECEIVE": str(settings.max_receive),
        "QUAERO_JOB_TIME_MS": f"{low * 1000:g}..{high * 1000:g}",
        "QUAERO_SEED": str(settings.seed),
        "QUAERO_DISABLED_FIXES": ",".join(disabled),
    }


@dataclass
class _Process:
    """One process of the command, the workers it runs, and what became of it."""

    name: str
    workers: range
    popen: subprocess.Popen[bytes]
    reader: EventReader
    stderr_path: Path
    stdout_path: Path
    hello: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    failure: ProtocolError | None = None
    stop_requested: bool = False
    #: why the run ended it (ignored SIGTERM): its workers count as crashed
    killed_because: str | None = None
    thread: threading.Thread | None = None

    def stderr_tail(self) -> str:
        try:
            lines = self.stderr_path.read_text("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-_STDERR_LINES:])

    def signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group: a shell wrapper's children too
            os.killpg(self.popen.pid, number)


class _OffsetPool(WorkerPool):
    """Built-in workers that come after the command's in the pool's numbering (and stagger)."""

    def __init__(self, offset: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.offset = offset

    def _spec(self, index: int) -> WorkerSpec:
        return super()._spec(index + self.offset)


class ExternalPool:
    """The worker command's processes (and, in a mixed pool, built-in workers) as one pool."""

    def __init__(
        self, db_path: str, settings: Settings, *, handler: Handler | None = None,
        endpoint_factory: EndpointFactory = open_endpoint, log_path: str | None = None,
    ) -> None:
        assert settings.worker_command
        self.db_path, self.settings = str(db_path), settings
        self.command = settings.worker_command
        self.argv = resolve_command(self.command)  # a Go module is built here, before the pool's clock
        self.run_dir = Path(log_path).parent if log_path else Path(self.db_path).parent
        self.started_at: float | None = None
        self.clock_offset = time.time() - time.monotonic()
        self._events: queue_module.SimpleQueue[Event] = queue_module.SimpleQueue()
        self._processes: list[_Process] = []
        self._log = get_logger("WorkerPool")
        #: the worker indexes of each process the command is started as
        self.groups = ([range(index, index + 1) for index in range(settings.workers)]
                       if settings.worker_processes == "per-worker" else [range(0, settings.workers)])
        self.builtin: WorkerPool | None = None
        if settings.builtin_workers:
            inner = settings.replace(source="mixed pool", workers=settings.builtin_workers)
            self.builtin = _OffsetPool(settings.workers, self.db_path, inner, handler=handler,
                                       endpoint_factory=endpoint_factory,
                                       log_path=log_path if settings.worker_mode == "process" else None)

    # ------------------------------------------------------------ starting

    def start(self) -> float:
        """Start every process, wait for each hello, then start the pool's clock; returns it."""
        if self.started_at is not None:
            raise RuntimeError("the pool is already running")
        self._log.info("Starting worker command %r: %d workers in %s", self.command, self.settings.workers,
                       "one process per worker" if self.settings.worker_processes == "per-worker" else "one process")
        try:
            for number, workers in enumerate(self.groups, start=1):
                self._spawn(number, workers)
            self._await_hello()
            started_at = self.builtin.start() if self.builtin is not None else time.monotonic()
        except BaseException:
            self._kill_all()
            raise
        self.started_at = started_at
        line = json.dumps({"command": "start", "at": started_at + self.clock_offset}).encode() + b"\n"
        for process in self._processes:
            try:
                assert process.popen.stdin is not None
                process.popen.stdin.write(line)
                process.popen.stdin.flush()
            except OSError:  # it died after hello: its reader reports the exit
                pass
        return started_at

    def _spawn(self, number: int, workers: range) -> None:
        name = f"worker command process {number}" if len(self.groups) > 1 else "worker command"
        stem = self.run_dir / f"worker-command-{number}"
        read_end, write_end = os.pipe()
        env = {**os.environ, **worker_environment(self.settings, self.db_path, workers.start, len(workers)),
               "QUAERO_EVENTS_FD": str(write_end)}
        out: IO[bytes] = open(f"{stem}.stdout", "wb")  # noqa: SIM115 - the child writes it; closed below
        err: IO[bytes] = open(f"{stem}.stderr", "wb")  # noqa: SIM115
        try:
            # a session of its own: Ctrl-C in the terminal reaches pytest, which stops the workers in order
            popen = subprocess.Popen(self.argv, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                     pass_fds=(write_end,), start_new_session=True)
        except OSError as exc:
            os.close(read_end)
            raise RunError(f"--quaero-worker-command={self.command}: cannot start {self.argv[0]!r} "
                           f"({exc.strerror or exc}); the database is kept at {self.db_path}.") from None
        finally:
            os.close(write_end)
            out.close()
            err.close()
        reader = EventReader(name, workers, self._events.put, clock_offset=self.clock_offset,
                             busy_timeout_ms=self.settings.busy_timeout_ms)
        process = _Process(name, workers, popen, reader, Path(f"{stem}.stderr"), Path(f"{stem}.stdout"))
        process.thread = threading.Thread(target=self._read, args=(process, read_end), daemon=True,
                                          name=f"quaero-events-{number}")
        self._processes.append(process)
        process.thread.start()

    def _await_hello(self) -> None:
        deadline = time.monotonic() + self.settings.worker_start_timeout
        for process in self._processes:
            process.hello.wait(max(0.0, deadline - time.monotonic()))
            if process.failure is not None:
                raise RunError(f"{process.failure}. The database is kept at {self.db_path}.")
            if process.reader.hello is None:
                code = process.popen.poll()
                if code is not None:
                    tail = process.stderr_tail()
                    raise RunError(f"{process.name} ({self.command}) exited with code {code} before saying hello"
                                   + (f"; the end of its stderr: {tail}" if tail else "; it wrote nothing on stderr")
                                   + f". The database is kept at {self.db_path}.")
                raise RunError(f"{process.name} ({self.command}) did not say hello within "
                               f"{self.settings.worker_start_timeout:g}s: a pytest-quaero worker writes "
                               "{\"event\": \"hello\", \"protocol\": 1, ...} to the file descriptor in "
                               "QUAERO_EVENTS_FD first (--quaero-worker-start-timeout allows longer). "
                               f"The database is kept at {self.db_path}.")

    def _read(self, process: _Process, read_end: int) -> None:
        with os.fdopen(read_end, "rb") as stream:
            for line in stream:
                try:
                    process.reader.feed(line)
                except ProtocolError as exc:
                    process.failure = exc
                    process.signal(signal.SIGKILL)
                    break
                if process.reader.hello is not None:
                    process.hello.set()
        code = process.popen.wait()
        why = process.killed_because
        if why is None and not process.stop_requested and process.failure is None:
            tail = process.stderr_tail()
            why = f"{process.name} exited with code {code} before the run stopped it" + (
                f" (its stderr ends: {tail})" if tail else "")
        process.reader.finish(time.monotonic(), why)
        process.hello.set()
        process.done.set()

    # ------------------------------------------------------------ running

    @property
    def worker_names(self) -> list[str]:
        names: list[str] = []
        for process in self._processes:
            hello = process.reader.hello
            language = "".join(ch for ch in (hello.language if hello else "ext").lower() if ch.isalnum()) or "ext"
            names.extend(f"{language}-{index + 1}" for index in process.workers)
        if self.builtin is not None:
            first = self.settings.workers + 1
            names.extend(f"JobWorker-{first + index}" for index in range(self.settings.builtin_workers))
        return names

    def poll_events(self) -> list[Event]:
        """Every event reported since the last call; a protocol error mid-run ends the run as a RunError."""
        events = self.builtin.poll_events() if self.builtin is not None else []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue_module.Empty:
                break
        failed = next((process.failure for process in self._processes if process.failure is not None), None)
        if failed is not None:
            raise RunError(f"{failed}. The run stopped; the database is kept at {self.db_path}.")
        return events

    @property
    def alive(self) -> int:
        running = sum(len(process.workers) for process in self._processes if not process.done.is_set())
        return running + (self.builtin.alive if self.builtin is not None else 0)

    @property
    def processes(self) -> list[Any]:
        """Spawned built-in worker processes (fault injection); the command's own are not Python processes."""
        return self.builtin.processes if self.builtin is not None else []

    # ------------------------------------------------------------ stopping

    def cancel(self) -> None:
        """Ask every worker to stop now (SIGTERM twice: the second abandons the job in progress)."""
        if self.builtin is not None:
            self.builtin.cancel()
        for process in self._processes:
            process.stop_requested = True
            process.signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0, *, cancel: bool = False) -> None:
        """SIGTERM, wait the grace period (at most ``timeout``), then SIGKILL whatever still runs."""
        if cancel:
            self.cancel()
        for process in self._processes:
            if not process.stop_requested:
                process.stop_requested = True
                process.signal(signal.SIGTERM)
        grace = min(self.settings.worker_stop_grace, timeout)
        deadline = time.monotonic() + grace
        for process in self._processes:
            if not process.done.wait(max(0.0, deadline - time.monotonic())) and process.popen.poll() is None:
                process.killed_because = (f"{process.name} was still running {grace:g}s after SIGTERM "
                                          "(--quaero-worker-stop-grace): killed")
                self._log.warning("%s", process.killed_because)
                process.signal(signal.SIGKILL)
        for process in self._processes:
            process.done.wait(10)
            if process.popen.stdin is not None:
                with contextlib.suppress(OSError):
                    process.popen.stdin.close()
        if self.builtin is not None:
            self.builtin.stop(timeout)
        self._log.info("Worker command stopped")

    def _kill_all(self) -> None:
        for process in self._processes:
            process.stop_requested = True
            process.signal(signal.SIGKILL)
        for process in self._processes:
            process.done.wait(10)

    def record(self, result: Any) -> None:
        """What ran, for the reports: ``result.extra["pool"]``."""
        first = self._processes[0].reader.hello if self._processes else None
        result.extra["pool"] = {
            "kind": "mixed" if self.builtin is not None else "external",
            "command": self.command,
            "argv": self.argv,
            "processes": len(self._processes),
            "workers": {"external": self.settings.workers, "builtin": self.settings.builtin_workers},
            "hello": dict(first.data) if first is not None else {},
            "exit_codes": [process.popen.returncode for process in self._processes],
            "killed": [process.killed_because for process in self._processes if process.killed_because],
            "logs": [str(process.stderr_path) for process in self._processes],
        }


def external_pool(
    db_path: str, settings: Settings, *, handler: Handler | None = None,
    endpoint_factory: EndpointFactory = open_endpoint, log_path: str | None = None,
) -> ExternalPool:
    """The run's pool factory when ``settings.worker_command`` is set."""
    return ExternalPool(db_path, settings, handler=handler, endpoint_factory=endpoint_factory, log_path=log_path)
