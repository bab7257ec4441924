"""huey's ``SqliteHuey`` behind pytest-quaero's queue contract.

The library is used with its defaults (``timeout=5`` seconds of busy wait,
``journal_mode='wal'``, ``cache_mb=8``); only the file is chosen: the run's own
SQLite file, next to ``crawl_jobs``, as a service keeping its jobs and its huey
queue in one database would. Every worker, producer and the run's monitor make
their own ``SqliteHuey`` (their own connection), as separate huey consumer
processes would.

Mapping: a huey task ``crawl(body)`` is enqueued per job (``huey.enqueue``), a
worker ``huey.dequeue()``s the next task, and its ``id`` is the message id. huey
deletes a task from its table when it is dequeued (at-most-once delivery), so
``delete`` has nothing left to do, and a task whose handler fails is gone: there
is no redelivery, and ``received`` is always 1.
"""

from __future__ import annotations

import os

from huey import SqliteHuey

from pytest_quaero import Message, QueueCounts


def crawl(body: str) -> None:
    """The task's function; pytest-quaero's worker does the work, huey only carries it."""


class HueyAdapter:
    def __init__(self, db_path: str, name: str) -> None:
        self.huey = SqliteHuey(name=name, filename=os.path.abspath(db_path))
        self.task = self.huey.task(name="crawl")(crawl)

    def send(self, body: bytes) -> str:
        task = self.task.s(body.decode())
        self.huey.enqueue(task)
        return str(task.id)

    def receive(self) -> Message | None:
        task = self.huey.dequeue()
        if task is None:
            return None
        return Message(str(task.id), task.args[0].encode(), 1)

    def delete(self, message_id: str) -> bool:
        return True  # already gone: huey removed it from its table on dequeue

    def counts(self) -> QueueCounts:
        pending = self.huey.pending_count()
        return QueueCounts(total=pending, visible=pending, in_flight=0, dead=0)

    def close(self) -> None:
        self.huey.storage.close()
