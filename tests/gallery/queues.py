"""Broken goqite queues. Each subclass changes exactly one method of the correct :class:`Queue`."""

from __future__ import annotations

import time

from pytest_quaero.core.queue import NOW, Message, Queue


class SelectThenUpdateQueue(Queue):
    """Non-atomic claim: SELECT the next message, then UPDATE it, as two statements.

    Every worker that ran the SELECT before the first UPDATE claims the same message
    (research §9: 1288 duplicates of 400). The 2ms between the steps stands for any
    work a real receive does there (logging, decoding, a network hop).
    """

    race_window = 0.002

    def receive(self) -> Message | None:
        row = self.conn.execute(
            f"select id, body, received from goqite where queue = ? and {NOW} >= timeout and received < ? "
            "order by priority desc, created limit 1",
            (self.name, self.max_receive),
        ).fetchone()
        if row is None:
            return None
        time.sleep(self.race_window)
        self.conn.execute(
            "update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), received = received + 1 "
            "where id = ?",
            (self._timeout_offset, row[0]),
        )
        return Message(row[0], bytes(row[1]), row[2] + 1)


class DeleteOnReceiveQueue(Queue):
    """At-most-once by accident: the message is deleted when received, before the job runs.

    A worker that crashes (or a job that fails) after this receive loses the job for good:
    there is no message left to come back after the visibility timeout.
    """

    def receive(self) -> Message | None:
        message = super().receive()
        if message is not None:
            self.conn.execute("delete from goqite where id = ?", (message.id,))
        return message


class SilentDeleteQueue(Queue):
    """A delete that drops silently: it deletes nothing and still reports success.

    Written against the wrong queue name (a typo or a stale config), the DELETE matches
    no row; the caller never checks the row count, so every ack is lost.
    """

    def delete(self, message_id: str) -> bool:
        self.conn.execute("delete from goqite where queue = ? and id = ?", (self.name + "-typo", message_id))
        return True


class UncountedReceiveQueue(Queue):
    """Unbounded redelivery: receive pushes the timeout but never counts the delivery.

    ``received`` stays 0, so ``max_receive`` can never stop a poison message: it comes
    back after every visibility timeout, forever, and the queue never drains.
    """

    def receive(self) -> Message | None:
        rows = self.conn.execute(
            f"update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?) "
            f"where id = (select id from goqite where queue = ? and {NOW} >= timeout and received < ? "
            f"order by priority desc, created limit 1) returning id, body, received",
            (self._timeout_offset, self.name, self.max_receive),
        ).fetchall()
        if not rows:
            return None
        msg_id, body, received = rows[0]
        return Message(msg_id, bytes(body), received)


class WorkInClaimTransactionQueue(Queue):
    """Slow work inside the write transaction: claim, do the job, and only then COMMIT.

    The claim's write lock is held for the whole job, so every other writer (workers,
    producers) waits in line: the pool does one job at a time however many workers it
    has (research §4). ``work`` is the job's duration, done here instead of in the handler.
    """

    work = 0.05

    def receive(self) -> Message | None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            message = super().receive()
            if message is not None:
                time.sleep(self.work)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.rollback()
            raise
        return message


class StrictDecodeQueue(Queue):
    """A receive that validates the body and raises on one it does not expect: the worker dies.

    The others drain the queue around it (the message comes back after the visibility timeout).
    """

    def receive(self) -> Message | None:
        message = super().receive()
        if message is not None and b"-child-2-3" in message.body and message.received == 1:
            raise ValueError(f"unexpected body in {message.id}")
        return message
