"""Calling the ``pytest_quaero_*`` hooks: from pytest, from worker threads, from spawned workers.

A run asks :class:`Extensions` (made for one node, so ``item.ihook`` folder scope
applies) for its job handler and its queue/store factory. With no hook of the
user's own, those are the built-in ones, exactly as without this module.
Otherwise they are small picklable objects:

* in thread mode (and for the producers and monitor, which always run in the
  pytest process) they call the node's live hook relay;
* in process mode the pool pickles them into a *spawned* child, which has no
  pytest session. They then carry :class:`PluginRef` records (an import name,
  or a file path for a ``conftest.py``), and the child imports those modules and
  registers them, in the parent's registration order, in a fresh pluggy
  :class:`pluggy.PluginManager` with the same hookspecs. ``@pytest.hookimpl``
  options (``tryfirst``/``trylast``) are attributes of the functions, so they
  come along; undecorated ``pytest_quaero_*`` functions count as implementations,
  as pytest counts them.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pickle
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from pytest_quaero.hookspecs import WORKER_HOOKS
from pytest_quaero.core.protocols import ProtocolError, check_queue, check_store

if TYPE_CHECKING:
    import sqlite3

    import pluggy

    from pytest_quaero.core.criteria import Criterion, Thresholds, Verdict
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.core.pool import Endpoint, EndpointFactory, Handler, Job, JobContext
    from pytest_quaero.core.scenarios import Scenario
    from pytest_quaero.core.settings import Settings

__all__ = [
    "DEFAULTS_NAME",
    "Extensions",
    "HookEndpointFactory",
    "HookHandler",
    "PluginRef",
    "WorkerHooks",
    "endpoint_connection",
    "known_scenarios",
    "register",
]

#: registration name of :mod:`pytest_quaero.defaults`
DEFAULTS_NAME = "quaero-hook-defaults"


def register(pluginmanager: pytest.PytestPluginManager) -> None:
    """Add the hookspecs and the plugin's ``trylast`` defaults (from ``pytest_addhooks``)."""
    from pytest_quaero import defaults, hookspecs

    pluginmanager.add_hookspecs(hookspecs)
    if pluginmanager.get_plugin(DEFAULTS_NAME) is None:
        pluginmanager.register(defaults, DEFAULTS_NAME)


# ------------------------------------------------------------------ scenarios

SCENARIOS_KEY = pytest.StashKey[dict]()
_SCENARIO_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def _impl_origin(impl: Any) -> str:
    plugin = impl.plugin
    where = getattr(plugin, "__file__", None) or type(plugin).__qualname__
    return f"{impl.function.__name__} in {where}"


def known_scenarios(config: pytest.Config) -> dict[str, Scenario]:
    """Built-in scenarios plus every one ``pytest_quaero_scenarios`` adds; checked once.

    Raises ValueError (the plugin turns it into a usage error) naming the hook
    implementation that returned something unusable.
    """
    cached = config.stash.get(SCENARIOS_KEY, None)
    if cached is not None:
        return cached
    from pytest_quaero.core.scenarios import BUILTIN, Scenario

    known: dict[str, Scenario] = dict(BUILTIN)
    origins = {name: "the built-in scenarios" for name in known}
    caller = config.hook.pytest_quaero_scenarios
    # Called one implementation at a time, so an error can say whose return it was.
    for impl in reversed(caller.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        origin = _impl_origin(impl)
        returned = impl.function()
        if returned is None:
            continue
        if isinstance(returned, Scenario):
            returned = [returned]
        if not isinstance(returned, (list, tuple)):
            raise ValueError(f"{origin} returned {type(returned).__name__}; return a list of "
                             "pytest_quaero.core.scenarios.Scenario.")
        for scenario in returned:
            if not isinstance(scenario, Scenario):
                raise ValueError(f"{origin} returned {scenario!r}; each item must be a "
                                 "pytest_quaero.core.scenarios.Scenario.")
            if not _SCENARIO_NAME.fullmatch(scenario.name) or scenario.name == "all":
                raise ValueError(f"{origin}: scenario name {scenario.name!r} is not allowed; use lower-case "
                                 "letters, digits, '-' and '_' (and not 'all').")
            if scenario.name in known:
                raise ValueError(f"{origin}: scenario {scenario.name!r} is already defined by "
                                 f"{origins[scenario.name]}.")
            known[scenario.name] = scenario
            origins[scenario.name] = origin
    config.stash[SCENARIOS_KEY] = known
    return known


# ------------------------------------------------------------------ one endpoint's shared connection


@dataclass
class _Building:
    db_path: str
    conn: sqlite3.Connection | None = None


_building = threading.local()


def endpoint_connection(db_path: str, settings: Settings) -> sqlite3.Connection:
    """The connection the default queue and store share while one endpoint is made.

    Outside :class:`HookEndpointFactory` (a direct hook call) it is a new connection
    the caller owns.
    """
    from pytest_quaero.core import db

    current: _Building | None = getattr(_building, "value", None)
    if current is None or current.db_path != db_path:
        return db.connect(db_path, settings)
    if current.conn is None:
        current.conn = db.connect(db_path, settings)
    return current.conn


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


# ------------------------------------------------------------------ plugin references for spawned workers


@dataclass(frozen=True)
class PluginRef:
    """How a spawned child finds one plugin again: module name, file, or pickled object."""

    name: str
    module: str | None = None
    path: str | None = None
    pickled: bytes | None = None


def _ref_for(name: str, plugin: Any) -> PluginRef:
    if inspect.ismodule(plugin):
        return PluginRef(name, module=plugin.__name__, path=getattr(plugin, "__file__", None))
    try:
        return PluginRef(name, pickled=pickle.dumps(plugin))
    except Exception as exc:
        raise ProtocolError(
            f"plugin {name!r} ({type(plugin).__qualname__}) implements a pytest_quaero worker hook but is an "
            f"object that cannot be sent to a spawned worker process ({type(exc).__name__}: {exc}). Put the hook "
            "in a conftest.py or a module, or use --quaero-worker-mode=thread."
        ) from None


def plugin_refs(config: pytest.Config, callers: dict[str, Any]) -> tuple[PluginRef, ...]:
    """The plugins whose implementations ``callers`` would call, in registration order."""
    wanted: dict[int, Any] = {}
    for caller in callers.values():
        for impl in caller.get_hookimpls():
            wanted[id(impl.plugin)] = impl.plugin
    return tuple(
        _ref_for(name, plugin)
        for name, plugin in config.pluginmanager.list_name_plugin()
        if plugin is not None and id(plugin) in wanted
    )


def _same_file(module: Any, path: str | None) -> bool:
    file = getattr(module, "__file__", None)
    return path is None or (file is not None and os.path.realpath(file) == os.path.realpath(path))


def _load(ref: PluginRef) -> Any:
    """Import (or unpickle) one plugin in a spawned child."""
    if ref.pickled is not None:
        return pickle.loads(ref.pickled)
    assert ref.module is not None
    # The child got the parent's sys.path (spawn copies it), so pytest's rootdir and
    # conftest directories are importable; a conftest may still resolve to another
    # file of the same name, hence the file check and the load by path.
    module = sys.modules.get(ref.module)
    if module is not None and _same_file(module, ref.path):
        return module
    try:
        module = importlib.import_module(ref.module)
        if _same_file(module, ref.path):
            return module
    except ImportError:
        if ref.path is None:
            raise
    assert ref.path is not None
    unique = "_quaero_plugin_" + re.sub(r"\W", "_", os.path.realpath(ref.path))
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, ref.path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the hook module {ref.path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module


def _child_manager_class() -> type:
    import pluggy

    class ChildPluginManager(pluggy.PluginManager):
        """Only the worker hooks; undecorated ``pytest_quaero_*`` functions count, as in pytest."""

        def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
            if name not in WORKER_HOOKS:
                return None
            opts = super().parse_hookimpl_opts(plugin, name)
            if opts is None and inspect.isroutine(getattr(plugin, name, None)):
                opts = {"wrapper": False, "hookwrapper": False, "optionalhook": False, "tryfirst": False,
                        "trylast": False, "specname": None}
            return opts

    return ChildPluginManager


_CHILD_MANAGERS: dict[tuple[PluginRef, ...], Any] = {}
_CHILD_LOCK = threading.Lock()


def _child_manager(refs: tuple[PluginRef, ...]) -> pluggy.PluginManager:
    with _CHILD_LOCK:
        manager = _CHILD_MANAGERS.get(refs)
        if manager is None:
            from pytest_quaero import hookspecs

            manager = _child_manager_class()("pytest")
            manager.add_hookspecs(hookspecs)
            for ref in refs:
                manager.register(_load(ref), ref.name)
            _CHILD_MANAGERS[refs] = manager
        return manager


class WorkerHooks:
    """The worker hooks of one node: live in the pytest process, re-registered in a child.

    Pickling keeps only ``refs`` (computed for process mode); the live callers
    stay behind, so an unpickled copy always goes through its own manager.
    """

    def __init__(self, callers: dict[str, Any], refs: tuple[PluginRef, ...] | None) -> None:
        self._callers: dict[str, Any] | None = callers
        self.refs = refs

    def __getstate__(self) -> dict[str, Any]:
        if self.refs is None:
            raise pickle.PicklingError("these hooks were resolved for thread mode; cannot send them to a process")
        return {"refs": self.refs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._callers = None
        self.refs = state["refs"]

    def call(self, name: str, **kwargs: Any) -> Any:
        if self._callers is not None:
            return self._callers[name](**kwargs)
        assert self.refs is not None
        return getattr(_child_manager(self.refs).hook, name)(**kwargs)


class HookEndpointFactory:
    """``endpoint_factory(db_path, settings)`` made of ``pytest_quaero_make_store/_queue``."""

    def __init__(self, hooks: WorkerHooks, *, watch_queue: bool = True) -> None:
        self.hooks = hooks
        #: run_scenario watches the drain through this factory's queue.counts(); pointless
        #: when only the store is the user's (the queue is then the built-in goqite one)
        self.watch_queue = watch_queue

    def __call__(self, db_path: str, settings: Settings) -> Endpoint:
        from pytest_quaero.core.pool import Endpoint

        building = _Building(str(db_path))
        _building.value = building
        made: list[Any] = []
        try:
            store = self.hooks.call("pytest_quaero_make_store", settings=settings, db_path=str(db_path))
            check_store(store)
            made.append(store)
            queue = self.hooks.call("pytest_quaero_make_queue", settings=settings, db_path=str(db_path))
            check_queue(queue)
            made.append(queue)
        except BaseException:
            _close_all(made, building.conn)
            raise
        finally:
            _building.value = None
        conn = getattr(queue, "conn", None)
        shared = conn is not None and conn is getattr(store, "conn", None)
        return Endpoint(queue=queue, store=store if shared else _TwoStepStore(store),
                        close=lambda: _close_all([queue, store], building.conn))


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

    def _callers(self) -> dict[str, Any]:
        return {name: getattr(self.ihook, name) for name in WORKER_HOOKS}

    def _own(self, name: str) -> list[Any]:
        """Implementations of ``name`` other than the plugin's defaults."""
        return [impl for impl in getattr(self.ihook, name).get_hookimpls() if impl.plugin_name != DEFAULTS_NAME]

    def _worker_hooks(self, settings: Settings) -> WorkerHooks:
        callers = self._callers()
        refs = plugin_refs(self.config, callers) if settings.worker_mode == "process" else None
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
        from pytest_quaero.core.pool import open_endpoint

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
        from pytest_quaero.core import db
        from pytest_quaero.core.queue import create_schema as queue_schema
        from pytest_quaero.core.store import create_schema as store_schema

        if settings.worker_mode == "process":
            pickle.dumps(factory)
        with tempfile.TemporaryDirectory(prefix="quaero-preflight-") as scratch:
            path = os.path.join(scratch, "preflight.db")
            db.prepare(path, settings)
            conn = db.connect(path, settings)
            try:
                queue_schema(conn)
                store_schema(conn)
            finally:
                conn.close()
            factory(path, settings).close()

    def criteria(self, scenario: Scenario) -> list[Criterion]:
        """The extra criteria declared for ``scenario`` at collection: one item each."""
        from pytest_quaero.core.criteria import CRITERIA, Criterion

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
        from pytest_quaero.core.criteria import Criterion, Verdict

        verdicts: list[Verdict] = []
        for returned in self.ihook.pytest_quaero_criteria(scenario=scenario, result=result):
            for entry in _as_list(returned):
                if isinstance(entry, Verdict):
                    verdicts.append(entry)
                elif isinstance(entry, Criterion):
                    try:
                        verdict = entry.judge(result, thresholds)
                        if not isinstance(verdict, Verdict):
                            raise TypeError(f"returned {type(verdict).__name__}, not a Verdict")
                    except Exception as exc:
                        verdict = Verdict(entry.key, entry.title, "judge raised", "a verdict", False,
                                          detail=f"{type(exc).__name__}: {exc}")
                    verdicts.append(verdict)
                else:
                    raise TypeError(f"pytest_quaero_criteria returned {entry!r}; return Criterion or Verdict objects")
        return verdicts

    def observe(self, result: RunResult) -> None:
        self.ihook.pytest_quaero_result(result=result)


def _as_list(returned: Any) -> list[Any]:
    if returned is None:
        return []
    if isinstance(returned, (list, tuple)):
        return list(returned)
    return [returned]
