"""Calling the ``pytest_quaero_*`` hooks for one node: scenarios, queue/store, handler, criteria.

A run asks :class:`Extensions` (made for one node, so ``item.ihook`` folder scope
applies) for its job handler and its queue/store factory. With no hook of the
user's own, those are the built-in ones, exactly as without this module.
Otherwise they are small picklable objects: in thread mode (and for the producers
and monitor, which always run in the pytest process) they call the node's live
hook relay; in process mode they travel to the spawned worker as
:class:`~pytest_quaero.spawned.WorkerHooks`.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from pytest_quaero.core import db
from pytest_quaero.core.criteria import CRITERIA, Criterion, Thresholds, Verdict
from pytest_quaero.core.instruments import forget_last_busy, instrumenting, last_failure
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.pool import Endpoint, EndpointFactory, Handler, Job, JobContext, open_endpoint
from pytest_quaero.core.protocols import ProtocolError, check_queue, check_store
from pytest_quaero.core.queue import create_schema as queue_schema
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import create_schema as store_schema
from pytest_quaero.defaults import DEFAULTS_NAME
from pytest_quaero.hookspecs import WORKER_HOOKS
from pytest_quaero.spawned import WorkerHooks, plugin_refs

__all__ = ["Extensions", "HookEndpointFactory", "HookHandler", "SharedConnection"]

# ------------------------------------------------------------------ queue and store from the hooks


class SharedConnection:
    """The ``connection`` argument of ``make_queue``/``make_store``: one connection per endpoint.

    Opened on first call with the run's pragmas, so a queue and a store made from it
    commit a child row and its message in one transaction; closed with the endpoint.
    """

    def __init__(self, db_path: str, settings: Settings) -> None:
        self.db_path = db_path
        self.settings = settings
        self.conn: sqlite3.Connection | None = None

    def __call__(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = db.connect(self.db_path, self.settings)
        return self.conn


class _TwoStepStore:
    """A store whose queue is not on its connection: the child row, then the message.

    They cannot share a transaction, and sending inside the store's write
    transaction would wait on the store's own lock (same file) until busy_timeout.
    A retry after the child row committed sends the message only.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self._created: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def create_child(self, job_id: str, parent_id: str, url: str, name: str = "",
                     enqueue: Callable[[], Any] | None = None) -> None:
        if job_id not in self._created:
            self._store.create_child(job_id, parent_id, url, name)
            self._created.add(job_id)
        if enqueue is not None:
            enqueue()
        self._created.discard(job_id)


class HookEndpointFactory:
    """``endpoint_factory(db_path, settings)`` made of ``pytest_quaero_make_store/_queue``."""

    def __init__(self, hooks: WorkerHooks, *, watch_queue: bool = True) -> None:
        self.hooks = hooks
        #: run_scenario watches the drain through this factory's queue.counts(); pointless
        #: when only the store is the user's (the queue is then the built-in goqite one)
        self.watch_queue = watch_queue

    def __call__(self, db_path: str, settings: Settings) -> Endpoint:
        shared = SharedConnection(str(db_path), settings)
        made: list[Any] = []
        try:
            store = self.hooks.call("pytest_quaero_make_store", settings=settings, db_path=str(db_path),
                                    connection=shared)
            check_store(store)
            made.append(store)
            queue = self.hooks.call("pytest_quaero_make_queue", settings=settings, db_path=str(db_path),
                                    connection=shared)
            check_queue(queue)
            made.append(queue)
        except BaseException:
            _close_all(made, shared.conn)
            raise
        conn = getattr(queue, "conn", None)
        same_connection = conn is not None and conn is getattr(store, "conn", None)
        return Endpoint(queue=queue, store=store if same_connection else _TwoStepStore(store),
                        close=lambda: _close_all([queue, store], shared.conn))


def _close_all(objects: Iterable[Any], conn: sqlite3.Connection | None) -> None:
    for obj in objects:
        close = getattr(obj, "close", None)
        if callable(close):
            close()
    if conn is not None:
        conn.close()


class HookHandler:
    """The job handler made of ``pytest_quaero_handle_job``."""

    def __init__(self, hooks: WorkerHooks) -> None:
        self.hooks = hooks

    def __call__(self, job: Job, context: JobContext) -> None:
        self.hooks.call("pytest_quaero_handle_job", job=job, context=context)


# ------------------------------------------------------------------ per-node access


class Extensions:
    """The hooks as one node sees them (``node.ihook``: its conftests, none below it)."""

    def __init__(self, config: pytest.Config, ihook: Any, where: str) -> None:
        self.config = config
        self.ihook = ihook
        self.where = where

    @classmethod
    def for_node(cls, node: pytest.Item | pytest.Collector) -> Extensions:
        return cls(node.config, node.ihook, node.nodeid)

    def _own(self, name: str) -> list[Any]:
        """Implementations of ``name`` other than the plugin's defaults."""
        return [impl for impl in getattr(self.ihook, name).get_hookimpls() if impl.plugin_name != DEFAULTS_NAME]

    def _worker_hooks(self, settings: Settings) -> WorkerHooks:
        callers = {name: getattr(self.ihook, name) for name in WORKER_HOOKS}
        refs = plugin_refs(self.config.pluginmanager, callers) if settings.worker_mode == "process" else None
        return WorkerHooks(callers, refs)

    def handler(self, settings: Settings) -> Handler | None:
        """``None`` without a handler hook of the user's: the pool's simulated work, unchanged."""
        if not self._own("pytest_quaero_handle_job"):
            return None
        try:
            return HookHandler(self._worker_hooks(settings))
        except ProtocolError as exc:
            pytest.fail(f"{self.where}: {exc}", pytrace=False)

    def endpoint_factory(self, settings: Settings) -> EndpointFactory:
        """The built-in queue and store, or the hooks' (made and checked once here first)."""
        if not (self._own("pytest_quaero_make_queue") or self._own("pytest_quaero_make_store")):
            return open_endpoint
        try:
            factory = HookEndpointFactory(self._worker_hooks(settings),
                                          watch_queue=bool(self._own("pytest_quaero_make_queue")))
            self._preflight(factory, settings)
        except ProtocolError as exc:
            pytest.fail(f"{self.where}: {exc}", pytrace=False)
        return factory

    def _preflight(self, factory: HookEndpointFactory, settings: Settings) -> None:
        # Make the queue and store once on a scratch file, so a broken contract is one
        # clear error here, not a worker that dies on its first job.
        if settings.worker_mode == "process":
            pickle.dumps(factory)
        scratch = tempfile.mkdtemp(prefix="quaero-preflight-")
        path = os.path.join(scratch, "preflight.db")
        forget_last_busy()
        try:
            with instrumenting():  # observed, so a failing statement can be named with its pragmas
                db.prepare(path, settings)
                conn = db.connect(path, settings)
                try:
                    queue_schema(conn)
                    store_schema(conn)
                finally:
                    conn.close()
                factory(path, settings).close()
        except sqlite3.Error as exc:
            # one sentence, not a traceback per criterion item; the scratch database stays for a look
            where = last_failure()
            pytest.fail(
                f"{self.where}: the queue/store contract check on a scratch database failed: "
                f"{type(exc).__name__}: {exc}" + (f", running {where}" if where else "")
                + f"; database kept: {path}. A lock error here means the queue or store waits on a connection "
                "of its own (or runs with busy_timeout=0); a schema error, that its tables do not fit the file.",
                pytrace=False,
            )
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        shutil.rmtree(scratch, ignore_errors=True)

    def criteria(self, scenario: Scenario) -> list[Criterion]:
        """The extra criteria declared for ``scenario`` at collection: one item each."""
        builtin = {criterion.key for criterion in CRITERIA}
        declared: list[Criterion] = []
        for returned in self.ihook.pytest_quaero_criteria(scenario=scenario, result=None):
            for entry in _as_list(returned):
                if not isinstance(entry, Criterion):
                    continue  # a Verdict needs a result; only Criterion objects become items
                if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", entry.key):
                    raise ValueError(f"pytest_quaero_criteria: criterion key {entry.key!r} must be letters, "
                                     "digits, '_', '-' or '.'")
                if entry.key in builtin or any(entry.key == other.key for other in declared):
                    raise ValueError(f"pytest_quaero_criteria: criterion key {entry.key!r} is already used")
                declared.append(entry)
        return declared

    def extra_verdicts(self, scenario: Scenario, result: RunResult, thresholds: Thresholds) -> list[Verdict]:
        """Judge the extra criteria of a finished run; a judge that raises is a failed verdict."""
        verdicts: list[Verdict] = []
        for returned in self.ihook.pytest_quaero_criteria(scenario=scenario, result=result):
            for entry in _as_list(returned):
                if isinstance(entry, Verdict):
                    verdicts.append(entry)
                elif isinstance(entry, Criterion):
                    verdicts.append(_judge(entry, result, thresholds))
                else:
                    raise TypeError(f"pytest_quaero_criteria returned {entry!r}; return Criterion or Verdict objects")
        return verdicts

    def observe(self, result: RunResult) -> None:
        self.ihook.pytest_quaero_result(result=result)


def _judge(criterion: Criterion, result: RunResult, thresholds: Thresholds) -> Verdict:
    try:
        verdict = criterion.judge(result, thresholds)
        if not isinstance(verdict, Verdict):
            raise TypeError(f"returned {type(verdict).__name__}, not a Verdict")
    except Exception as exc:  # noqa: BLE001 - a user's judge that raises is that criterion's failure, not ours
        verdict = Verdict(criterion.key, criterion.title, "judge raised", "a verdict", False,
                          detail=f"{type(exc).__name__}: {exc}")
    return verdict


def _as_list(returned: Any) -> list[Any]:
    if returned is None:
        return []
    if isinstance(returned, (list, tuple)):
        return list(returned)
    return [returned]
