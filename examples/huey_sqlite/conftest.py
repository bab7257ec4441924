"""Run pytest-quaero's scenarios against huey's SqliteHuey: the queue comes from this hook.

A module-level hook in a conftest.py also works with --quaero-worker-mode=process:
the spawned workers import this file again and register the hook themselves.
"""

from huey_adapter import HueyAdapter


def pytest_quaero_make_queue(settings, db_path):
    return HueyAdapter(db_path, settings.queue_name)
