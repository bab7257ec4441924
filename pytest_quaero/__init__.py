"""pytest-quaero: database-lock regression testing for SQLite-backed job queues.

The public API: everything a ``conftest.py`` needs to plug its own queue, store,
handler, scenarios and criteria into the plugin. Deeper import paths
(``pytest_quaero.core...``) are internal and may change between releases.

Names are loaded on first use (PEP 562), so importing the package, which pytest
does in every session of every project that installs the plugin, stays cheap.
A regular package (not a namespace one) on purpose: pytest marks an installed
plugin's modules for assertion rewriting by their dotted names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_quaero.core.criteria import Criterion, Thresholds, Verdict
    from pytest_quaero.core.db import open_connection as connect
    from pytest_quaero.core.explore.clock import now
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.core.pool import Job, JobContext
    from pytest_quaero.core.protocols import ProtocolError, QueueProtocol, StoreProtocol, check_queue, check_store
    from pytest_quaero.core.queue import Message, Queue, QueueCounts
    from pytest_quaero.core.scenarios import Scenario
    from pytest_quaero.core.settings import Settings
    from pytest_quaero.core.store import JobStore

__all__ = [
    "Criterion",
    "Job",
    "JobContext",
    "JobStore",
    "Message",
    "ProtocolError",
    "Queue",
    "QueueCounts",
    "QueueProtocol",
    "RunResult",
    "Scenario",
    "Settings",
    "StoreProtocol",
    "Thresholds",
    "Verdict",
    "check_queue",
    "check_store",
    "connect",
    "now",
]

#: public name -> the internal module that defines it
_HOMES = {
    "Criterion": "core.criteria",
    "Thresholds": "core.criteria",
    "Verdict": "core.criteria",
    "connect": "core.db",
    "now": "core.explore.clock",
    "RunResult": "core.metrics",
    "Job": "core.pool",
    "JobContext": "core.pool",
    "ProtocolError": "core.protocols",
    "QueueProtocol": "core.protocols",
    "StoreProtocol": "core.protocols",
    "check_queue": "core.protocols",
    "check_store": "core.protocols",
    "Message": "core.queue",
    "Queue": "core.queue",
    "QueueCounts": "core.queue",
    "Scenario": "core.scenarios",
    "Settings": "core.settings",
    "JobStore": "core.store",
}

#: public names whose internal name differs
_RENAMED = {"connect": "open_connection"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pytest_quaero' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pytest_quaero.{home}"), _RENAMED.get(name, name))
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
