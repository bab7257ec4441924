"""One scenario run: seed the crawl-job tree, drain it with the pool, validate, record.

The order is the template's: create the schema (once, before any worker), start
the staggered pool, create the parents concurrently (one producer per parent:
parent row, then each child row together with its message), watch the queue until
it is drained, stop the pool, run the integrity SQL. The run measures and records;
it never decides pass or fail (that is :mod:`pytest_quaero.core.criteria`).

The database and its seeding are :mod:`pytest_quaero.core.seed`, the watching is
:mod:`pytest_quaero.core.monitor`; this module puts them in order and fills the
:class:`~pytest_quaero.core.metrics.RunResult`.
"""

from __future__ import annotations

import logging
import os
import platform
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_quaero.core import db, integrity, noise
from pytest_quaero.core.disturbance import Disturbance, RunContext
from pytest_quaero.core.errors import RunError
from pytest_quaero.core.findings import record_findings, scheduling_delays
from pytest_quaero.core.instruments import HARNESS_OPERATION, operation
from pytest_quaero.core.jobs import Handler
from pytest_quaero.core.log import TemplateFormatter, get_logger, log_excerpts, logger
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.monitor import Progress, Tally, open_monitor, watch
from pytest_quaero.core.observed import observing
from pytest_quaero.core.pool import WorkerPool
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.retry import classify, merge_stats
from pytest_quaero.core.scenarios import Scenario, shaped
from pytest_quaero.core.seed import Producers, prepare_database
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.worker import EndpointFactory, open_endpoint

__all__ = ["PHASES", "Progress", "RunError", "prepare_database", "run_files", "run_scenario"]

#: how long a run that drained (or reached its deadline) waits for its workers to stop
STOP_TIMEOUT = 60.0
#: how long a run that did not get to its drain (Ctrl-C, SIGTERM, an error) waits for its
#: workers: the simulated work stops at once, a handler that ignores the stop is not waited out
ABORT_STOP_TIMEOUT = 5.0

#: the phases of a run's timeline, with the template's label for each
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


def _attach_log(log_path: str) -> Callable[[], None]:
    """Send the run's log lines to its own file too; returns the call that stops it."""
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


def run_files(settings: Settings, run_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """Where a run in ``run_dir`` keeps its database and its log: ``(db_path, log_path)``."""
    run_dir = Path(run_dir)
    db_path = str(Path(settings.db_path).resolve()) if settings.db_path else str(run_dir / "quaero.db")
    return db_path, str(run_dir / "quaero.log")


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
    pool_factory: Callable[..., Any] = WorkerPool,
    disturbances: Sequence[Disturbance] = (),
    prepare: Callable[[Settings, str], None] | None = None,
) -> RunResult:
    """Run ``scenario`` once and return everything it measured.

    ``deadline`` (seconds, default the scenario's time limit) stops a run that does
    not drain; the result then says ``timed_out`` and the criteria judge it.
    ``handler``, ``endpoint_factory`` and ``pool_factory`` swap in a user's (or a
    deliberately broken) job handler, queue/store, or pool. ``disturbances`` (contention
    loads, fault injectors; see :mod:`pytest_quaero.core.disturbance`) start after the pool and
    stop after the drain.

    ``execution_time`` ends when the monitor sees the queue drained (or the deadline pass):
    stopping the pool afterwards (thousands of idle threads take a while) is recorded apart,
    as ``extra["pool_stop_seconds"]``.

    ``prepare(settings, db_path)`` (the ``pytest_quaero_prepare_database`` hook) runs once, in
    this process, after the plugin prepared the file and before the pool's clock starts; its
    time is ``extra["setup_seconds"]``, never part of a worker's start or the execution time.

    With ``settings.worker_command`` the pool is that command
    (:mod:`~pytest_quaero.core.external`), unless a ``pool_factory`` is given.
    """
    settings = shaped(scenario, settings)
    if settings.worker_command and pool_factory is WorkerPool:
        from pytest_quaero.core.external import external_pool  # deferred: only a worker command needs it

        pool_factory = external_pool
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    db_path, log_path = run_files(settings, run_dir)
    run_id = secrets.token_hex(4)
    pg = _postgresql_run(settings, run_id)  # the run's own schema on PostgreSQL; None on SQLite
    if pg is not None:
        db_path = pg.dsn
    deadline = scenario.time_limit if deadline is None else deadline
    detach_log = _attach_log(log_path)
    log = get_logger("WorkerPool")
    t0 = time.monotonic()
    timeline: list[dict[str, Any]] = [{"phase": "initialization", "label": PHASES["initialization"], "offset": 0.0}]

    def mark(phase: str, at: float | None = None, label: str | None = None) -> None:
        offset = (time.monotonic() if at is None else at) - t0
        timeline.append({"phase": phase, "label": label or PHASES[phase], "offset": round(offset, 6)})

    result = RunResult(
        scenario=scenario.name, parents=scenario.parents, children_per_parent=scenario.children, run_id=run_id,
        settings=settings.as_dict(), settings_sources=dict(settings.sources), time_limit=scenario.time_limit,
        db_path=db_path if pg is None else pg.shown_dsn, log_path=log_path, started_wall=time.time(),
        sqlite_version=sqlite3.sqlite_version, python_version=platform.python_version(),
        platform=f"{platform.system()} {platform.release()} {platform.machine()}",
    )
    # every connection opened while the run lasts (the plugin's, a hook's, a user's) is counted,
    # and what it does measured: statements, write transactions, lock hold and wait
    # (this thread only runs the harness: preparing, watching, checking; never the code under test)
    with observing() as instruments, operation(HARNESS_OPERATION):
        instruments.queue_name = settings.queue_name
        try:
            log.info("Scenario %s: %d parents x %d children = %d jobs, run %s, database %s", scenario.name,
                     scenario.parents, scenario.children, scenario.total_jobs, run_id, result.db_path)
            result.pragmas = (_prepare(db_path, settings) if pg is None else pg.prepare()).as_dict()
            # a hook-made queue/store brings its one-time setup (pytest_quaero_prepare_database) along
            prepare = prepare if prepare is not None else getattr(endpoint_factory, "prepare_database", None)
            if prepare is not None:
                setup_started = time.monotonic()
                prepare(settings, db_path)
                result.extra["setup_seconds"] = round(time.monotonic() - setup_started, 6)
            if pg is not None:  # the claim check, then the server's counters: before the pool's first statement
                pg.start(None if settings.worker_command else endpoint_factory)
            pool = pool_factory(db_path, settings, handler=handler, endpoint_factory=endpoint_factory,
                                log_path=log_path if settings.worker_mode == "process" or settings.worker_command
                                else None)
            producers = Producers(scenario, run_id, db_path, settings, endpoint_factory)
            try:
                pool_started = pool.start()
            except BaseException:  # Ctrl-C while threads start or processes spawn: none is left running
                _stop_pool(pool, ABORT_STOP_TIMEOUT, cancel=True)
                raise
            # Spawning worker processes (~0.3 s, before the pool's clock starts) is the harness's
            # cost, not the queue's: the run's clock starts with the pool's, so process mode is not
            # judged slower for it. What it cost stays on record.
            result.extra["pool_startup_seconds"] = round(pool_started - t0, 6)
            t0 = pool_started
            tally = Tally(settings.workers, t0, getattr(pool, "worker_names", None))
            mark("pool_started", pool_started)
            monitor = open_monitor(db_path, settings)
            # A queue made by pytest_quaero_make_queue keeps its messages where it likes, so the
            # run watches it through its own counts() (protocols.QueueProtocol), not the goqite table.
            watched = endpoint_factory(db_path, settings) if getattr(endpoint_factory, "watch_queue", False) else None
            started: list[Disturbance] = []
            watched_until: float | None = None  # when watch() saw the drain or the deadline
            try:
                for disturbance in disturbances:
                    disturbance.start(RunContext(scenario, settings, db_path, str(run_dir), run_id, t0, pool, mark))
                    started.append(disturbance)
                mark("parent_creation_started")
                producers.start()
                watch(scenario, settings, pool, producers, tally, monitor, t0, deadline, sample_interval,
                      result, on_progress, mark, watched.queue if watched is not None else None)
                watched_until = time.monotonic()
            finally:
                stopping = time.monotonic()
                # Interrupted (Ctrl-C, SIGTERM), failed, or past the deadline: the jobs in progress
                # are cut short (left unfinished), not waited out.
                if watched_until is None:
                    _stop_pool(pool, ABORT_STOP_TIMEOUT, cancel=True)
                else:
                    _stop_pool(pool, STOP_TIMEOUT, cancel=result.timed_out)
                result.extra["pool_stop_seconds"] = round(time.monotonic() - stopping, 6)
                producers.join(30)
                tally.fold(pool.poll_events())
                for disturbance in reversed(started):
                    disturbance.stop()
                describe = getattr(pool, "record", None)  # an external pool: who ran, and how it ended
                if describe is not None:
                    describe(result)
            assert watched_until is not None  # watch() returned: the run reached its drain or deadline
            result.execution_time = watched_until - t0
            if tally.first_received is not None:
                mark("processing_started", tally.first_received)
            mark("validation")
            try:
                checks = (integrity.check if pg is None else pg.integrity)(monitor, run_id, parents=scenario.parents,
                                         children_per_parent=scenario.children, queue_name=settings.queue_name,
                                         max_receive=settings.max_receive)
                if watched is not None:
                    left = watched.queue.counts()
                    checks["messages_left"], checks["dead_messages"] = int(left.total), int(left.dead)
                    integrity.recount_lost(checks, int(left.total), acked=int(getattr(left, "acked", 0) or 0))
            finally:
                monitor.close()
                if watched is not None:
                    watched.close()
            _record(result, tally, producers, checks)
            for part in tally.instrument_parts:  # spawned workers measured in their own processes
                instruments.merge(part)
            record_findings(result, instruments)
            if pg is not None:  # every connection of the run is closed by now: the server's counts are final
                pg.finish(result, scenario.total_jobs)
            result.extra["scheduling"] = scheduling_delays(tally.wake_delays)
            result.extra["noise"] = noise.measure(tally.done_at, tally.processing_times, tally.latencies)
            for disturbance in started:
                disturbance.record(result)
            timeline.sort(key=lambda entry: entry["offset"])
            mark("completed")
            result.timeline = timeline
            result.total_duration = time.monotonic() - t0
            log.info("Scenario %s finished: %d/%d jobs completed in %.2fs (%.1f jobs/s), %d %s",
                     scenario.name, result.jobs_completed, scenario.total_jobs, result.execution_time,
                     result.throughput, result.busy_errors, "busy errors" if pg is None else "lock errors")
            # The reports quote real lines of this run; read them while the file is certainly here.
            result.log_excerpts = log_excerpts(log_path)
            return result
        finally:
            detach_log()
            if pg is not None:
                pg.close()  # drops the run's schema, and nothing else


def _prepare(db_path: str, settings: Settings) -> db.Pragmas:
    """prepare_database, refusing a file whose queue still holds messages, and saying whose they are.

    A live run that holds the file's run lock (:mod:`~pytest_quaero.core.dbfile`) is named
    with its pid; without one, the messages are an earlier run's leftovers. A database
    failure is a RunError naming the file, SQLite's words and what to do: one sentence in
    the reports, never a traceback, and the file is kept as it was.
    """
    try:
        pragmas = prepare_database(db_path, settings)
        conn = db.connect(db_path, settings)
        try:
            leftover = len(Queue(conn, settings.queue_name))
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if classify(exc):
            hint = "another process holds a lock on it: let it finish, or use another --quaero-db path"
        else:
            hint = (f"check it with: sqlite3 {db_path} 'pragma integrity_check', or give --quaero-db a new "
                    "file name")
        raise RunError(f"{db_path}: the database could not be prepared ({type(exc).__name__}: {exc}); "
                       f"{hint}.") from None
    if leftover:
        # deferred: only a leftover queue needs the run lock's holder (a file lock and its pid file)
        from pytest_quaero.core.dbfile import holder

        live = holder(db_path)
        if live is not None:
            raise RunError(
                f"{db_path}: another run is using this file right now ({live.describe()}); its queue "
                f"{settings.queue_name!r} holds {leftover} messages of that run. Wait for it to finish, or give "
                "this run another --quaero-db path."
            )
        raise RunError(
            f"{db_path}: queue {settings.queue_name!r} already holds {leftover} messages from an earlier run; "
            "a run must start from an empty queue. Use a new --quaero-db path or another --quaero-queue-name."
        )
    return pragmas


def _postgresql_run(settings: Settings, run_id: str) -> Any:
    """The run's schema on PostgreSQL (:class:`~pytest_quaero.core.postgresql.backend.PgRun`), None on SQLite."""
    if settings.backend != "postgresql":
        return None
    from pytest_quaero.core.postgresql import missing_extra  # deferred: a SQLite run never imports the backend

    missing = missing_extra(embedded=not settings.dsn)
    if missing is not None:  # a marker chose postgresql where the extra is not installed
        raise RunError(f"--quaero-backend=postgresql: {missing}.")
    # deferred: the postgresql extra's modules import psycopg
    from pytest_quaero.core.postgresql.backend import PgRun
    from pytest_quaero.core.postgresql.server import ServerError

    try:
        return PgRun(settings, run_id)
    except ServerError as exc:
        raise RunError(str(exc)) from None


def _stop_pool(pool: WorkerPool, timeout: float, *, cancel: bool) -> None:
    """Stop the pool; with ``cancel``, cut its jobs in progress short first (a pool from a
    ``pool_factory`` that cannot cancel, e.g. a wrapper, lets them finish)."""
    if cancel:
        cancel_jobs = getattr(pool, "cancel", None)
        if cancel_jobs is not None:
            cancel_jobs()
    pool.stop(timeout)


def _record(result: RunResult, tally: Tally, producers: Producers, checks: dict[str, Any]) -> None:
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
    result.extra["crashed_workers"] = tally.crashed[:50]
    result.integrity = checks
    result.python_version = result.python_version or sys.version.split()[0]

