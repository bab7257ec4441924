"""django-q2's ORM broker behind pytest-quaero's queue contract.

django-q2 is a task queue for Django; with ``Q_CLUSTER = {"orm": "default"}`` its broker keeps
tasks in a Django model (``django_q_ormq``) through Django's own database connections: one per
thread, opened by Django's SQLite backend with its defaults (Python's 5 s busy timeout, deferred
transactions) and, as django-q2's broker asks, closed and reopened around its calls
(``close_old_connections`` with Django's default ``CONN_MAX_AGE = 0``). The library is used
with its defaults (``retry`` 60 s, ``bulk`` 1, ``poll`` 0.2 s); only the file is chosen: the
run's own SQLite file, next to ``crawl_jobs``.

Django reads its settings once per process. ``pytest_quaero_prepare_database`` runs once per
run's file in the pytest process, before any worker: it points Django at the file and runs the
migrations. A spawned worker process (``--quaero-worker-mode=process``) configures Django from
the same path when it makes its queue.

Mapping: ``broker.enqueue`` -> send (its row id), ``broker.dequeue`` -> receive (it claims a task
by moving its ``lock`` to now + ``retry``, compare-and-set on the old value), ``acknowledge`` ->
delete (the row is deleted). A claimed task whose worker never acks is delivered again once
its ``retry`` passed; django-q2 keeps no delivery count, so ``received`` is always 1.
"""

from __future__ import annotations

import django
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connections

from pytest_quaero import Message, QueueCounts


def use_database(db_path: str, name: str) -> None:
    """Point this process's Django at ``db_path`` (configured on first use, re-pointed for a later run)."""
    if not django_settings.configured:
        django_settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_path}},
            INSTALLED_APPS=["django_q"],
            Q_CLUSTER={"name": name, "orm": "default"},
            USE_TZ=True,
        )
        django.setup()
    elif django_settings.DATABASES["default"]["NAME"] != db_path:
        # a later run of the same pytest session, on a file of its own
        connections.close_all()
        django_settings.DATABASES["default"]["NAME"] = db_path


def migrate(db_path: str, name: str) -> None:
    use_database(db_path, name)
    call_command("migrate", "django_q", verbosity=0)
    connections.close_all()


class DjangoQ2Adapter:
    def __init__(self, db_path: str, name: str) -> None:
        use_database(db_path, name)
        from django_q.brokers import get_broker  # needs Django configured first

        self.broker = get_broker(list_key=name)

    def send(self, body: bytes) -> str:
        return str(self.broker.enqueue(body.decode()))

    def receive(self) -> Message | None:
        claimed = self.broker.dequeue()  # waits `poll` (0.2 s) when there is nothing to claim
        if not claimed:
            return None
        task_id, payload = claimed[0]
        return Message(str(task_id), payload.encode(), 1)

    def delete(self, message_id: str) -> bool:
        self.broker.acknowledge(message_id)
        return True

    def counts(self) -> QueueCounts:
        visible, in_flight = self.broker.queue_size(), self.broker.lock_size()
        return QueueCounts(total=visible + in_flight, visible=visible, in_flight=in_flight, dead=0)

    def close(self) -> None:
        connections.close_all()  # this thread's connection: Django keeps one per thread
