"""A run's database: prepared once before any worker, then seeded with the crawl-job tree.

:func:`prepare_database` sets the journal mode and creates the goqite and crawl_jobs
tables (the run, the ``quaero_db`` fixture and the benchmarks all start from a file
prepared here). :class:`Producers` then create the jobs as the template does: one
producer thread per parent, all at once, each writing its parent row and then every
child row together with its message, in one transaction per child.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any

from pytest_quaero.core import db, integrity
from pytest_quaero.core.jobs import encode_job
from pytest_quaero.core.queue import create_schema as create_queue_schema
from pytest_quaero.core.retry import Retrier, classify, database_error
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import create_schema as create_store_schema
from pytest_quaero.core.worker import Endpoint, EndpointFactory

__all__ = ["Producers", "prepare_database"]


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


class Producers:
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
                create = functools.partial(_create_child, store, queue, cid, pid, url, f"page-{c}",
                                           encode_job(cid, pid, url))
                try:
                    retrier.call("create_child", create, cid)
                    sent += 1
                except Exception as exc:
                    if database_error(exc) is None:
                        raise
                    errors.append(f"{name} child {cid}: {classify(exc) or type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a user's queue or store may raise anything; the run reports it
            errors.append(f"{name}: {classify(exc) or type(exc).__name__}: {exc}")
        finally:
            if endpoint is not None:
                endpoint.close()
            with self._lock:
                self.sent += sent
                self.errors.extend(errors)
                self.retry_parts.append(retrier.snapshot())
                self.finished_at = time.monotonic()


def _create_child(store: Any, queue: Any, job_id: str, parent_id: str, url: str, name: str, body: bytes) -> None:
    """The child row and its message in one transaction (the store calls ``enqueue`` inside it)."""
    # queue.send is looked up only when the store enqueues: a fault-injecting queue may have
    # moved to a new connection by then (a restarted producer).
    store.create_child(job_id, parent_id, url, name, enqueue=lambda: queue.send(body))
