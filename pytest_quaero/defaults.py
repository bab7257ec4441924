"""The plugin's own implementations of its hooks: every one ``trylast``, so any other wins.

Registered as the plugin ``quaero-hook-defaults``; a spawned worker process
imports this module by name and registers it in its own plugin manager, so the
defaults behave the same in both worker modes.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_quaero.core.pool import Job, JobContext
    from pytest_quaero.core.queue import Queue
    from pytest_quaero.core.settings import Settings
    from pytest_quaero.core.store import JobStore


def _connection(db_path: str, settings: Settings) -> sqlite3.Connection:
    # While an endpoint is being made, the default queue and store share one
    # connection, so a child row and its message commit in one transaction.
    from pytest_quaero.extension import endpoint_connection

    return endpoint_connection(db_path, settings)


@pytest.hookimpl(trylast=True)
def pytest_quaero_make_queue(settings: Settings, db_path: str) -> Queue:
    from pytest_quaero.core.queue import Queue

    return Queue(_connection(db_path, settings), settings.queue_name,
                 visibility_timeout=settings.visibility_timeout, max_receive=settings.max_receive)


@pytest.hookimpl(trylast=True)
def pytest_quaero_make_store(settings: Settings, db_path: str) -> JobStore:
    from pytest_quaero.core.store import JobStore

    return JobStore(_connection(db_path, settings), begin_immediate=settings.begin_immediate)


@pytest.hookimpl(trylast=True)
def pytest_quaero_handle_job(job: Job, context: JobContext) -> Any:
    from pytest_quaero.core.pool import SimulatedWork

    low, high = context.settings.job_time
    SimulatedWork(low, high, seed=context.settings.seed)(job, context)
    return True

