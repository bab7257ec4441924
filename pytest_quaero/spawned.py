"""The worker hooks in a spawned worker process, which has no pytest session.

In process mode the pool pickles the hook callers into a *spawned* child. They
then carry :class:`PluginRef` records (an import name, or a file path for a
``conftest.py``); the child imports those modules and registers them, in the
parent's registration order, in a fresh pluggy :class:`pluggy.PluginManager`
with the same hookspecs. ``@pytest.hookimpl`` options (``tryfirst``/``trylast``)
are attributes of the functions, so they come along; undecorated
``pytest_quaero_*`` functions count as implementations, as pytest counts them.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pickle
import re
import sys
from dataclasses import dataclass
from typing import Any

import pluggy

from pytest_quaero import hookspecs
from pytest_quaero.core.protocols import ProtocolError
from pytest_quaero.hookspecs import WORKER_HOOKS

__all__ = ["PluginRef", "WorkerHooks", "load_plugin", "plugin_refs", "ref_for"]


@dataclass(frozen=True)
class PluginRef:
    """How a spawned child finds one plugin again: module name, file, or pickled object."""

    name: str
    module: str | None = None
    path: str | None = None
    pickled: bytes | None = None


def ref_for(name: str, plugin: object) -> PluginRef:
    """The reference a child re-creates ``plugin`` from; a clear error if it cannot travel."""
    if inspect.ismodule(plugin):
        return PluginRef(name, module=plugin.__name__, path=getattr(plugin, "__file__", None))
    try:
        return PluginRef(name, pickled=pickle.dumps(plugin))
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ProtocolError(
            f"plugin {name!r} ({type(plugin).__qualname__}) implements a pytest_quaero worker hook but is an "
            f"object that cannot be sent to a spawned worker process ({type(exc).__name__}: {exc}). Put the hook "
            "in a conftest.py or a module, or use --quaero-worker-mode=thread."
        ) from None


def plugin_refs(pluginmanager: pluggy.PluginManager, callers: dict[str, Any]) -> tuple[PluginRef, ...]:
    """The plugins whose implementations ``callers`` would call, in registration order."""
    wanted: dict[int, object] = {}
    for caller in callers.values():
        for impl in caller.get_hookimpls():
            wanted[id(impl.plugin)] = impl.plugin
    return tuple(
        ref_for(name, plugin)
        for name, plugin in pluginmanager.list_name_plugin()
        if plugin is not None and id(plugin) in wanted
    )


def _same_file(module: object, path: str | None) -> bool:
    file = getattr(module, "__file__", None)
    return path is None or (file is not None and os.path.realpath(file) == os.path.realpath(path))


def load_plugin(ref: PluginRef) -> object:
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


class _ChildPluginManager(pluggy.PluginManager):
    """Only the worker hooks; undecorated ``pytest_quaero_*`` functions count, as in pytest."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        if name not in WORKER_HOOKS:
            return None
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and inspect.isroutine(getattr(plugin, name, None)):
            opts = {"wrapper": False, "hookwrapper": False, "optionalhook": False, "tryfirst": False,
                    "trylast": False, "specname": None}
        return opts


def _child_manager(refs: tuple[PluginRef, ...]) -> pluggy.PluginManager:
    manager = _ChildPluginManager("pytest")
    manager.add_hookspecs(hookspecs)
    for ref in refs:
        manager.register(load_plugin(ref), ref.name)
    return manager


class WorkerHooks:
    """The worker hooks of one node: live in the pytest process, re-registered in a child.

    Pickling keeps only ``refs`` (computed for process mode); the live callers
    stay behind, so an unpickled copy goes through a plugin manager of its own,
    built on first use and kept for the life of the copy (one per worker process).
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
        if self._callers is None:
            assert self.refs is not None
            manager = _child_manager(self.refs)
            self._callers = {hook: getattr(manager.hook, hook) for hook in WORKER_HOOKS}
        return self._callers[name](**kwargs)
