"""persist-queue's ``SQLiteAckQueue`` behind pytest-quaero's queue contract.

The library is used with its defaults (``timeout=10.0``, ``auto_commit=True``,
``auto_resume=True``, ``multithreading=False``); only where it keeps its table is
chosen: in the run's own SQLite file, next to ``crawl_jobs``, as a service using
persist-queue for its jobs would. Every worker, producer and the run's monitor
make their own ``SQLiteAckQueue`` (their own connection), like separate worker
processes of a service would.

Mapping: ``put`` -> send, ``get(block=False, raw=True)`` -> receive, ``ack`` ->
delete. persist-queue keeps no delivery count and no visibility timeout, so
``received`` is always 1 and a message whose handler failed stays ``unack`` until
some new queue object is created (``auto_resume`` puts all of them back).
"""

from __future__ import annotations

import os
import sqlite3

import persistqueue
from persistqueue.sqlackqueue import AckStatus

from pytest_quaero import Message, QueueCounts


class PersistQueueAdapter:
    def __init__(self, db_path: str, name: str) -> None:
        directory, filename = os.path.split(os.path.abspath(db_path))
        self.queue = persistqueue.SQLiteAckQueue(directory, name=name, db_file_name=filename)
        # persist-queue's own size counters live in each Python object, so a count of what
        # is in the table (all workers' messages) needs a plain read of its table.
        self._table = f"ack_queue_{name}"
        self._reader = sqlite3.connect(db_path, timeout=10.0)

    def send(self, body: bytes) -> str:
        return str(self.queue.put(body))

    def receive(self) -> Message | None:
        try:
            item = self.queue.get(block=False, raw=True)
        except persistqueue.Empty:
            return None
        return Message(str(item["pqid"]), bytes(item["data"]), 1)

    def delete(self, message_id: str) -> bool:
        # ack() marks the row acked (the library keeps acked rows); it cannot tell a
        # repeated ack from the first one.
        return self.queue.ack(id=int(message_id)) is not None

    def counts(self) -> QueueCounts:
        rows = dict(self._reader.execute(f"select status, count(*) from {self._table} group by status").fetchall())
        by = {str(k): v for k, v in rows.items()}
        visible = by.get(AckStatus.inited, 0) + by.get(AckStatus.ready, 0)
        in_flight = by.get(AckStatus.unack, 0)
        dead = by.get(AckStatus.ack_failed, 0)
        return QueueCounts(total=visible + in_flight + dead, visible=visible, in_flight=in_flight, dead=dead)

    def close(self) -> None:
        self.queue.close()
        self._reader.close()
