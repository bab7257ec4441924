"""Broken pools, connection factories and job handlers."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import zlib
from typing import Any

from pytest_quaero.core import db
from pytest_quaero.core.pool import Endpoint, Job, JobContext, WorkerPool, WorkerSpec, open_endpoint
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import JobStore

# ------------------------------------------------------------------ pools


class UnstaggeredPool(WorkerPool):
    """A pool that ignores the stagger setting: every worker starts at once (and collides)."""

    def _spec(self, index: int) -> WorkerSpec:
        spec = super()._spec(index)
        return dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, stagger=0.0))


# ------------------------------------------------------------------ connection factories


def endpoint_with(queue_class: type[Queue] = Queue, store_factory: Any = None) -> Any:
    """An endpoint factory like the built-in one, with a (broken or correct) queue and store class."""

    def factory(db_path: str, settings: Settings) -> Endpoint:
        conn = db.connect(db_path, settings)
        queue = queue_class(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                            max_receive=settings.max_receive)
        store = store_factory(conn) if store_factory else JobStore(conn, begin_immediate=settings.begin_immediate)
        return Endpoint(queue=queue, store=store, close=conn.close)

    return factory


def no_busy_timeout_endpoint(db_path: str, settings: Settings) -> Endpoint:
    """Pragmas set on one connection only: every other connection has busy_timeout 0.

    Quaero ran its PRAGMAs once through a ``*sql.DB`` pool; busy_timeout is per connection,
    so every further pooled connection failed on the first lock it met (research §3).
    """
    endpoint = open_endpoint(db_path, settings)
    endpoint.queue.conn.execute("PRAGMA busy_timeout = 0")
    return endpoint


class SharedConnection:
    """One connection for every producer and worker thread (``check_same_thread=False``).

    A transaction belongs to the connection, not the thread: threads interleave their
    BEGIN/COMMIT, one thread's COMMIT ends another's work half done, and a second BEGIN
    fails with "cannot start a transaction within a transaction" (research §6).
    """

    def __init__(self, store_factory: Any = None) -> None:
        self._conns: dict[str, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._store_factory = store_factory or JobStore

    def __call__(self, db_path: str, settings: Settings) -> Endpoint:
        with self._lock:
            conn = self._conns.get(db_path)
            if conn is None:
                conn = sqlite3.connect(db_path, timeout=settings.busy_timeout_ms / 1000, isolation_level=None,
                                       check_same_thread=False)
                conn.execute(f"PRAGMA busy_timeout = {settings.busy_timeout_ms}")
                self._conns[db_path] = conn
        queue = Queue(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                      max_receive=settings.max_receive)
        return Endpoint(queue=queue, store=self._store_factory(conn), close=lambda: None)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()


# ------------------------------------------------------------------ handlers


def _share(job_id: str, every: int) -> bool:
    return zlib.crc32(job_id.encode()) % every == 0


@dataclasses.dataclass
class FirstAttemptCrash:
    """A job that crashes on its first delivery and succeeds on the next (a transient failure).

    Every ``every``-th job (by a hash of its id, so the same jobs in every run shape).
    """

    every: int = 3

    def __call__(self, job: Job, context: JobContext) -> None:
        if job.attempt == 1 and _share(job.job_id, self.every):
            raise RuntimeError(f"worker crashed while processing {job.job_id}")


@dataclasses.dataclass
class PoisonJob:
    """One job (the first child of the first parent) that fails on every delivery."""

    def __call__(self, job: Job, context: JobContext) -> None:
        if job.job_id.endswith("-child-1-1"):
            raise RuntimeError(f"poison message {job.job_id}")


class JobLog:
    """A handler that records each job in a table of its own (a crawler saving the page it fetched).

    With ``hold_lock`` it opens its write transaction before the work and commits after it, so
    SQLite's write lock is held for the whole job: every other writer waits. Without, it works
    first and writes in a short transaction, as it should.
    """

    def __init__(self, work: float, *, hold_lock: bool) -> None:
        self.work, self.hold_lock = work, hold_lock
        self._local = threading.local()

    def _conn(self, context: JobContext) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "db_path", None) != context.db_path:
            conn = self._local.conn = db.connect(context.db_path, context.settings)
            self._local.db_path = context.db_path
            conn.execute("create table if not exists job_log (job_id text primary key, done_at real)")
        return conn

    def __call__(self, job: Job, context: JobContext) -> None:
        conn = self._conn(context)
        if self.hold_lock:
            conn.execute("BEGIN IMMEDIATE")
            context.pause(self.work)
        else:
            context.pause(self.work)
            conn.execute("BEGIN IMMEDIATE")
        conn.execute("insert or replace into job_log values (?, julianday('now'))", (job.job_id,))
        conn.execute("COMMIT")
