"""The plugin's own implementations of its hooks: every one ``trylast``, so any other wins.

Registered as the plugin ``quaero-hook-defaults``; a spawned worker process
imports this module by name and registers it in its own plugin manager, so the
defaults behave the same in both worker modes. The default queue and store take
the endpoint's shared ``connection``, so a child row and its message commit in
one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # annotations only: this module is registered at every start-up
    import sqlite3

    from pytest_quaero.core.pool import Job, JobContext
    from pytest_quaero.core.queue import Queue
    from pytest_quaero.core.settings import Settings
    from pytest_quaero.core.store import JobStore

#: the registration name of this module, so the plugin's defaults can be told from a user's hooks
DEFAULTS_NAME = "quaero-hook-defaults"


@pytest.hookimpl(trylast=True)
def pytest_quaero_make_queue(settings: Settings, db_path: str, connection: Callable[[], sqlite3.Connection]) -> Queue:
    from pytest_quaero.core.queue import Queue  # deferred: registered at every start-up, used only in a run

    return Queue(connection(), settings.queue_name,
                 visibility_timeout=settings.visibility_timeout, max_receive=settings.max_receive)


@pytest.hookimpl(trylast=True)
def pytest_quaero_make_store(
    settings: Settings, db_path: str, connection: Callable[[], sqlite3.Connection]
) -> JobStore:
    from pytest_quaero.core.store import JobStore  # deferred: registered at every start-up, used only in a run

    return JobStore(connection(), begin_immediate=settings.begin_immediate)


@pytest.hookimpl(trylast=True)
def pytest_quaero_handle_job(job: Job, context: JobContext) -> Any:
    from pytest_quaero.core.pool import SimulatedWork  # deferred: registered at every start-up, used only in a run

    low, high = context.settings.job_time
    SimulatedWork(low, high, seed=context.settings.seed)(job, context)
    return True
