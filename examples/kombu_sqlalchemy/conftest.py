"""Run pytest-quaero's scenarios against kombu's SQLAlchemy transport: the queue comes from these hooks.

Module-level hooks in a conftest.py also work with --quaero-worker-mode=process: the
spawned workers import this file again and register the hooks themselves.
"""

from kombu_adapter import KombuAdapter, create_queue


def pytest_quaero_prepare_database(settings, db_path):
    create_queue(db_path, settings.queue_name)


def pytest_quaero_make_queue(settings, db_path):
    return KombuAdapter(db_path, settings.queue_name)
