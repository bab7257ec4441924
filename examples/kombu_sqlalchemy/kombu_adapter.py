"""kombu's SQLAlchemy transport (``sqla+sqlite://``) behind pytest-quaero's queue contract.

kombu is the messaging library under Celery; its ``sqla`` transport keeps messages in two
SQLAlchemy tables (``kombu_queue``, ``kombu_message``) through an engine of its own (one per
URL and process, SQLAlchemy's connection pool, pysqlite's default 5 s busy timeout). The
library is used with its defaults; only the file is chosen: the run's own SQLite file, next to
``crawl_jobs``. Every worker, producer and the run's monitor make their own ``Connection``
and ``SimpleQueue`` (their own channel and session), as separate Celery workers would.

Mapping: ``SimpleQueue.put`` -> send (it returns nothing: the plugin correlates by the job id
it put into the body), ``get(block=False)`` -> receive (the kombu message is handed back to
``delete``, which acks it), and ``counts`` from kombu's own table. The transport marks a
message ``visible = False`` when it is fetched and never deletes it: a retaining queue, so
``counts`` reports every row in ``total`` and only the visible ones as ``visible``; the rest is
acknowledged and retained. There is no visibility timeout and no delivery count: a fetched
message is never delivered again (at-most-once), and ``received`` is always 1.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from kombu import Connection

from pytest_quaero import QueueCounts


def url(db_path: str) -> str:
    return f"sqla+sqlite:///{os.path.abspath(db_path)}"


def create_queue(db_path: str, name: str) -> None:
    """kombu's tables and the queue's row, once, before any worker: a first use does both."""
    with Connection(url(db_path)) as connection:
        connection.SimpleQueue(name).close()


@dataclass
class Fetched:
    """What ``receive`` hands the plugin: the body, and the kombu message ``delete`` acks."""

    body: str
    message: Any


class KombuAdapter:
    def __init__(self, db_path: str, name: str) -> None:
        self.connection = Connection(url(db_path))
        self.queue = self.connection.SimpleQueue(name)
        self.name = name
        self._reader = sqlite3.connect(db_path)  # counts read kombu's table as it is, all workers' rows

    def send(self, body: bytes) -> None:
        self.queue.put(body.decode())

    def receive(self) -> Fetched | None:
        try:
            message = self.queue.get(block=False)
        except self.queue.Empty:
            return None
        return Fetched(message.payload, message)

    def delete(self, fetched: Fetched) -> bool:
        fetched.message.ack()
        return True

    def counts(self) -> QueueCounts:
        total, visible = self._reader.execute(
            "select count(*), coalesce(sum(m.visible), 0) from kombu_message m join kombu_queue q "
            "on m.queue_id = q.id where q.name = ?", (self.name,)).fetchone()
        return QueueCounts(total=total, visible=visible, in_flight=0, dead=0)

    def close(self) -> None:
        self.queue.close()
        self.connection.release()
        self._reader.close()
