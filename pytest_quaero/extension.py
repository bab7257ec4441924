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

import pickle
import re
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from pytest_quaero.core import db
from pytest_quaero.core.criteria import CRITERIA, Criterion, Thresholds, Verdict
from pytest_quaero.core.instruments import forget_last_busy, last_failure
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.pool import Endpoint, EndpointFactory, Handler, Job, JobContext, open_endpoint
from pytest_quaero.core.protocols import AdaptedQueue, ProtocolError, check_queue, check_store
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.retry import database_error
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.defaults import DEFAULTS_NAME
from pytest_quaero.hookspecs import WORKER_HOOKS
from pytest_quaero.spawned import WorkerHooks, plugin_refs

__all__ = ["Extensions", "HookEndpointFactory", "HookHandler", "PreparedEndpoints", "SharedConnection"]

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

    def __init__(self, hooks: WorkerHooks, *, watch_queue: bool = True,
                 prepare_database: Callable[[Settings, str], None] | None = None) -> None:
        self.hooks = hooks
        #: run_scenario watches the drain through this factory's queue.counts(); pointless
        #: when only the store is the user's (the queue is then the built-in goqite one)
        self.watch_queue = watch_queue
        #: run_scenario calls it once per database file, in the pytest process, before the
        #: pool's clock starts: pytest_quaero_prepare_database, then the contract check
        self.prepare_database = prepare_database

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["prepare_database"] = None  # the pytest process's alone: a spawned worker sets nothing up
        return state

    def __call__(self, db_path: str, settings: Settings) -> Endpoint:
        shared = SharedConnection(str(db_path), settings)
        made: list[Any] = []
        try:
            store = self.hooks.call("pytest_quaero_make_store", settings=settings, db_path=str(db_path),
                                    connection=shared)
            check_store(store)
            made.append(store)
            made_queue = self.hooks.call("pytest_quaero_make_queue", settings=settings, db_path=str(db_path),
                                         connection=shared)
            check_queue(made_queue)
            made.append(made_queue)
        except BaseException:
            _close_all(made, shared.conn)
            raise
        conn = getattr(made_queue, "conn", None)
        same_connection = conn is not None and conn is getattr(store, "conn", None)
        # the built-in goqite queue is taken as it is; a queue of one's own may use the looser forms
        queue = made_queue if type(made_queue) is Queue else AdaptedQueue(made_queue)
        return Endpoint(queue=queue, store=store if same_connection else _TwoStepStore(store),
                        close=lambda: _close_all([queue, store], shared.conn))


class PreparedEndpoints:
    """The built-in queue and store (:func:`open_endpoint`), with a ``pytest_quaero_prepare_database`` of one's own."""

    watch_queue = False

    def __init__(self, prepare_database: Callable[[Settings, str], None] | None) -> None:
        self.prepare_database = prepare_database

    def __getstate__(self) -> dict[str, Any]:
        return {"prepare_database": None}  # see HookEndpointFactory.__getstate__

    def __call__(self, db_path: str, settings: Settings) -> Endpoint:
        return open_endpoint(db_path, settings)


class _Setup:
    """What the run calls once per database file before its clock starts (``prepare=`` of run_scenario).

    The user's ``pytest_quaero_prepare_database``, then the contract check: the queue and store
    made once on the run's own file and closed, so a broken contract is one clear error before
    any worker starts, and every hook call of the run sees one database path.
    """

    def __init__(self, hook: Any, where: str, factory: Any = None) -> None:
        self.hook, self.where, self.factory = hook, where, factory

    def __call__(self, settings: Settings, db_path: str) -> None:
        if self.hook is not None:
            self.hook(settings=settings, db_path=db_path)
        if self.factory is None:
            return
        forget_last_busy()
        try:
            self.factory(db_path, settings).close()
        except ProtocolError as exc:
            pytest.fail(f"{self.where}: {exc}", pytrace=False)
        except Exception as exc:
            if database_error(exc) is None:
                raise
            # one sentence, not a traceback per criterion item; the run's database stays for a look
            failed = last_failure()
            pytest.fail(
                f"{self.where}: the queue/store contract check on the run's database failed: "
                f"{type(exc).__name__}: {exc}" + (f", running {failed}" if failed else "")
                + f"; database kept: {db_path}. A lock error here means the queue or store waits on a connection "
                "of its own (or runs with busy_timeout=0); a schema error, that its tables do not fit the file.",
                pytrace=False,
            )


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

    def prepare_database(self) -> Callable[..., None] | None:
        """``pytest_quaero_prepare_database`` as this node sees it, or ``None`` without one of the user's."""
        if not self._own("pytest_quaero_prepare_database"):
            return None
        hook: Callable[..., None] = self.ihook.pytest_quaero_prepare_database
        return hook

    def endpoint_factory(self, settings: Settings) -> EndpointFactory:
        """The built-in queue and store, or the hooks'; with the node's one-time setup and contract check.

        The factory carries them as ``prepare_database``: run_scenario calls it once per
        database file (also for each extra run of ``--quaero-compare-fixes``) before the pool starts.
        """
        hook = self.prepare_database()
        if not (self._own("pytest_quaero_make_queue") or self._own("pytest_quaero_make_store")):
            return PreparedEndpoints(_Setup(hook, self.where)) if hook is not None else open_endpoint
        try:
            factory = HookEndpointFactory(self._worker_hooks(settings),
                                          watch_queue=bool(self._own("pytest_quaero_make_queue")))
            if settings.worker_mode == "process":
                pickle.dumps(factory)  # a factory that cannot reach the workers: said now, not by a dead pool
        except ProtocolError as exc:
            pytest.fail(f"{self.where}: {exc}", pytrace=False)
        factory.prepare_database = _Setup(hook, self.where, factory)
        return factory

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
