"""Run pytest-quaero's scenarios against django-q2's ORM broker: the queue comes from these hooks.

Module-level hooks in a conftest.py also work with --quaero-worker-mode=process: the
spawned workers import this file again and register the hooks themselves.
"""

from django_q2_adapter import DjangoQ2Adapter, migrate


def pytest_quaero_prepare_database(settings, db_path):
    migrate(db_path, settings.queue_name)


def pytest_quaero_make_queue(settings, db_path):
    return DjangoQ2Adapter(db_path, settings.queue_name)
