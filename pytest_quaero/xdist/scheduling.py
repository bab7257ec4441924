"""The xdist controller's side: which worker runs what, and what each worker is told at start.

:class:`QuaeroScheduling` is what ``pytest_xdist_make_scheduler`` returns: an object with
the methods and properties of xdist's scheduler protocol
(``xdist.scheduler.protocol.Scheduling``), written here in full rather than derived from
one of xdist's schedulers, whose private methods are no interface to build on. It hands
out work in *scopes*, a scope going to one worker whole:

* ``quaero[<scenario>@<worker>]`` (a ``--quaero-shared-db`` shard) is pinned to that worker
  and handed out before anything else, so every worker starts its share of the load at once;
* any other ``quaero...`` node (a scenario, an audit) is one scope: its criterion items run
  where the load ran, once;
* every other test is grouped as the ``--dist`` mode asked for would group it.

This module imports no part of xdist: pytest-xdist calls it through its hooks only.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pytest

from pytest_quaero.session import QuaeroSession

__all__ = ["FALLBACKS", "QuaeroScheduling", "WorkerNode", "XdistHooks"]

#: the --dist modes whose grouping QuaeroScheduling reproduces for the tests that are not ours
FALLBACKS = ("load", "loadscope", "loadfile", "loadgroup", "worksteal")
_SHARD_SCOPE = re.compile(r"^quaero\[(?P<scenario>[^\]@]+)@(?P<worker>[^\]]+)\]$")
#: a worker holding more pending items than this gets no more for now (xdist's schedulers use 2 too)
_LOW_WATER = 2

#: node id -> done, for the items of one scope
WorkUnit = dict[str, bool]


class _Gateway(Protocol):
    @property
    def id(self) -> str: ...


class WorkerNode(Protocol):
    """What the scheduler uses of xdist's ``WorkerController`` (xdist ships no type information)."""

    @property
    def gateway(self) -> _Gateway: ...

    @property
    def shutting_down(self) -> bool: ...

    def send_runtest_some(self, indices: Sequence[int]) -> None: ...

    def shutdown(self) -> None: ...


class _StartingWorker(Protocol):
    """A worker being set up: ``pytest_configure_node`` may add to what it receives."""

    @property
    def workerinput(self) -> dict[str, Any]: ...


class XdistHooks:
    """Controller-side hooks, registered only with xdist present."""

    def __init__(self, session: QuaeroSession) -> None:
        self.session = session

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: _StartingWorker) -> None:
        shared = self.session.config.getoption("quaero_shared_db")
        if shared:
            # One absolute path for every worker, whatever its working directory.
            node.workerinput["quaero_shared_db"] = os.path.abspath(shared)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> QuaeroScheduling | None:
        # log: xdist's Producer, called like print; ``log.quaerosched`` names the lines ours
        dist = config.getoption("dist")
        wanted = self.session.scenarios or config.getoption("quaero_audit")
        if not wanted or dist not in FALLBACKS:
            return None
        return QuaeroScheduling(config, log.quaerosched, fallback=dist)


def _expected_nodes(config: pytest.Config) -> int:
    """How many workers xdist starts: one per ``--tx`` spec, ``3*popen`` counting three (``-n 3`` becomes that)."""
    count = 0
    for spec in config.getvalue("tx") or ():
        times, star, _ = str(spec).partition("*")
        count += int(times) if star and times.isdigit() else 1
    return count


def _collection_diff(first: Sequence[str], other: Sequence[str], first_id: str, other_id: str) -> str | None:
    if list(first) == list(other):
        return None
    diff = "\n".join(line.rstrip() for line in difflib.unified_diff(first, other, fromfile=first_id, tofile=other_id))
    return (f"Different tests were collected between {first_id} and {other_id}. The difference is:\n{diff}\n"
            "To see why this happens see 'Known limitations' in documentation for pytest-xdist")


class QuaeroScheduling:
    """xdist's scheduler protocol, with a scope per ``quaero[...]`` node and shards pinned to their worker.

    ``workqueue`` holds the scopes not handed out yet, in the order they go;
    ``assigned_work`` what each live worker was given (and what of it is done).
    """

    def __init__(self, config: pytest.Config, log: Callable[..., object] | None = None, *,
                 fallback: str = "load") -> None:
        self.config = config
        self.fallback = fallback
        self.log: Callable[..., object] = log if log is not None else (lambda *args: None)
        #: workers expected to report a collection before scheduling starts
        self.numnodes = _expected_nodes(config)
        self.collection: list[str] | None = None
        self.workqueue: dict[str, WorkUnit] = {}
        self.assigned_work: dict[WorkerNode, dict[str, WorkUnit]] = {}
        self.registered_collections: dict[WorkerNode, list[str]] = {}

    # ---------------------------------------------------------------- the protocol's state

    @property
    def nodes(self) -> list[WorkerNode]:
        """The live workers."""
        return list(self.assigned_work)

    @property
    def collection_is_completed(self) -> bool:
        return len(self.registered_collections) >= self.numnodes

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self.workqueue:
            return False
        # A worker runs an item once it knows the next one or is told to shut down, so one
        # pending item each is the end: the controller's shutdown lets them run it.
        return all(_pending(work) < 2 for work in self.assigned_work.values())

    @property
    def has_pending(self) -> bool:
        return bool(self.workqueue) or any(_pending(work) for work in self.assigned_work.values())

    # ---------------------------------------------------------------- the protocol's events

    def add_node(self, node: WorkerNode) -> None:
        assert node not in self.assigned_work
        self.assigned_work[node] = {}

    def add_node_collection(self, node: WorkerNode, collection: Sequence[str]) -> None:
        assert node in self.assigned_work
        if self.collection_is_completed and self.collection is not None:
            # a worker started late (replacing a crashed one) must have collected the same tests
            first = next(iter(self.registered_collections))
            message = _collection_diff(self.collection, collection, first.gateway.id, node.gateway.id)
            if message:
                self.log(message)
                return
        self.registered_collections[node] = list(collection)

    def mark_test_complete(self, node: WorkerNode, item_index: int, duration: float = 0) -> None:
        nodeid = self.registered_collections[node][item_index]
        self.assigned_work[node][self.scope_of(nodeid)][nodeid] = True
        # Any completion may leave another worker with nothing it may take: shut it down.
        self._reschedule_all()

    def mark_test_pending(self, item: str) -> None:
        raise NotImplementedError("QuaeroScheduling never moves a test back to pending")

    def remove_pending_tests_from_node(self, node: WorkerNode, indices: Sequence[int]) -> None:
        # only work stealing asks for tests back, and this scheduler never steals
        raise NotImplementedError("QuaeroScheduling never takes tests back from a worker")

    def remove_node(self, node: WorkerNode) -> str | None:
        """Forget a worker that finished or died; a dead one's unfinished scopes go to the others.

        Returns the item it was running when it died (xdist reports it failed), or None when it
        had nothing left.
        """
        workload = self.assigned_work.pop(node)
        unfinished = [(scope, nodeid) for scope, unit in workload.items() for nodeid, done in unit.items() if not done]
        if not unfinished:
            return None
        scope, crashed = unfinished[0]
        # Not run again (as xdist's load mode does): an item that kills its worker would kill every
        # replacement in turn. The rest of its scope, a dead worker's unstarted shard too, goes on.
        workload[scope][crashed] = True
        self.workqueue.update((scope, unit) for scope, unit in workload.items() if not all(unit.values()))
        self._reschedule_all()
        return crashed

    def schedule(self) -> None:
        """Start handing out work once every worker collected; later calls top the workers up."""
        assert self.collection_is_completed
        if self.collection is not None:
            # a worker replacing a crashed one: it too must hold two items before it runs one
            self._reschedule_all(rounds=2)
            return
        if not self._same_collections():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = list(next(iter(self.registered_collections.values())))
        if not self.collection:
            return
        units: dict[str, WorkUnit] = {}
        for nodeid in self.collection:
            units.setdefault(self.scope_of(nodeid), {})[nodeid] = False
        # Shards first, so every worker starts its share of the shared-db load at once.
        for scope, unit in sorted(units.items(), key=lambda kv: 0 if _pin(kv[0]) else 1):
            self.workqueue[scope] = unit
        self._reschedule_all(rounds=2)

    # ---------------------------------------------------------------- scopes

    def scope_of(self, nodeid: str) -> str:
        """The scope ``nodeid`` is handed out with: its ``quaero[...]`` node, else as ``--dist`` groups."""
        if nodeid.startswith("quaero"):
            return nodeid.split("::", 1)[0]
        if self.fallback == "loadscope":
            return nodeid.rsplit("::", 1)[0]  # a class, else a module
        if self.fallback == "loadfile":
            return nodeid.split("::", 1)[0]
        if self.fallback == "loadgroup" and nodeid.rfind("@") > nodeid.rfind("]"):
            return nodeid.split("@")[-1]  # the xdist_group name pytest-xdist appends
        return nodeid

    def _may_take(self, node: WorkerNode, scope: str) -> bool:
        pin = _pin(scope)
        if pin is None:
            return True
        live = {n.gateway.id for n in self.nodes}
        # a pin to a worker that died is void: someone must run the shard
        return pin == node.gateway.id or pin not in live

    def _reschedule_all(self, rounds: int = 1) -> None:
        # Two rounds when work starts: a worker holding a single item waits for a next one before running it.
        for _ in range(rounds):
            for node in self.nodes:
                self._reschedule(node)

    def _reschedule(self, node: WorkerNode) -> None:
        if node.shutting_down or node not in self.registered_collections:
            return  # a worker still collecting gets its work when its collection arrives
        takeable = [scope for scope in self.workqueue if self._may_take(node, scope)]
        if not takeable:
            node.shutdown()  # nothing left this worker may ever run
            return
        if _pending(self.assigned_work[node]) > _LOW_WATER:
            return
        self._assign(node, takeable[0])

    def _assign(self, node: WorkerNode, scope: str) -> None:
        unit = self.workqueue.pop(scope)
        self.assigned_work[node][scope] = unit
        collection = self.registered_collections[node]
        node.send_runtest_some([collection.index(nodeid) for nodeid, done in unit.items() if not done])

    def _same_collections(self) -> bool:
        """Whether every worker collected the same tests; a failed collect report for each that did not."""
        (first, expected), *others = self.registered_collections.items()
        same = True
        for node, collection in others:
            message = _collection_diff(expected, collection, first.gateway.id, node.gateway.id)
            if message:
                same = False
                self.log(message)
                report = pytest.CollectReport(nodeid=node.gateway.id, outcome="failed", longrepr=message, result=[])
                self.config.hook.pytest_collectreport(report=report)
        return same


def _pin(scope: str) -> str | None:
    """The worker a shard's scope is pinned to, or None for any other scope."""
    match = _SHARD_SCOPE.match(scope)
    return match.group("worker") if match else None


def _pending(workload: dict[str, WorkUnit]) -> int:
    return sum(not done for unit in workload.values() for done in unit.values())
