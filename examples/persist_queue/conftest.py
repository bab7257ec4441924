"""Run pytest-quaero's scenarios against persist-queue: the queue comes from this hook.

A module-level hook in a conftest.py also works with --quaero-worker-mode=process:
the spawned workers import this file again and register the hook themselves.
"""

from persist_queue_adapter import PersistQueueAdapter


def pytest_quaero_make_queue(settings, db_path):
    return PersistQueueAdapter(db_path, settings.queue_name)
