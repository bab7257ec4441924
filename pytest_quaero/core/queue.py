"""A goqite-compatible message queue on one SQLite table.

Same table, index, trigger and UTC millisecond timestamps as maragudk/goqite (HEAD),
so a database a Go goqite service wrote reads the same here and the other way round.
Every method is one statement (one transaction): ``receive`` claims the
highest-priority, oldest visible message in a single UPDATE ... RETURNING, so two
workers can never claim the same message and no read-then-write upgrade can fail.

Retrying lock errors is the caller's job (:class:`~pytest_quaero.core.retry.Retrier`), so
the harness counts busy errors the same way for this queue and for a user's own.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

__all__ = ["SCHEMA", "Message", "Queue", "QueueCounts", "create_schema"]

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

SCHEMA = f"""
create table if not exists goqite (
  id text primary key default ('m_' || lower(hex(randomblob(16)))),
  created text not null default ({NOW}),
  updated text not null default ({NOW}),
  queue text not null,
  body blob not null,
  timeout text not null default ({NOW}),
  received integer not null default 0,
  priority integer not null default 0
) strict;

create trigger if not exists goqite_updated_timestamp after update on goqite begin
  update goqite set updated = {NOW} where id = old.id;
end;

create index if not exists goqite_queue_priority_created_idx on goqite (queue, priority desc, created);
"""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the goqite table if missing (idempotent, unlike goqite v0.3.1's Setup)."""
    conn.executescript(SCHEMA)


def _offset(seconds: float) -> str:
    return f"{seconds:+.3f} seconds"


_NO_DELAY = _offset(0.0)

# Built once: an f-string with {NOW} in a method is rebuilt (and re-hashed for the statement
# cache lookup) on every call, and receive runs once per job.
_RECEIVE_SQL = (
    f"update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), received = received + 1 "
    f"where id = (select id from goqite where queue = ? and {NOW} >= timeout and received < ? "
    f"order by priority desc, created limit 1) returning id, body, received"
)


@dataclass(frozen=True)
class Message:
    """A received message: goqite id, body, and how many times it has been received."""

    id: str
    body: bytes
    received: int


@dataclass(frozen=True)
class QueueCounts:
    """A snapshot of one queue's rows."""

    total: int
    visible: int
    in_flight: int
    dead: int


class Queue:
    """One named queue in the ``goqite`` table, used through one connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        name: str = "quaero_jobs",
        *,
        visibility_timeout: float = 5.0,
        max_receive: int = 3,
    ) -> None:
        if visibility_timeout <= 0:
            raise ValueError("visibility_timeout must be > 0")
        if max_receive < 1:
            raise ValueError("max_receive must be >= 1")
        self.conn = conn
        self.name = name
        self.visibility_timeout = visibility_timeout
        self.max_receive = max_receive
        self._timeout_offset = _offset(visibility_timeout)

    def send(self, body: bytes, delay: float = 0.0, priority: int = 0) -> str:
        """Enqueue ``body``, visible after ``delay`` seconds; returns goqite's ``m_...`` id."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        row = self.conn.execute(
            "insert into goqite (queue, body, timeout, priority) "
            "values (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), ?) returning id",
            (self.name, body, _offset(delay) if delay else _NO_DELAY, priority),
        ).fetchall()
        return str(row[0][0])

    def receive(self) -> Message | None:
        """Claim the next visible message for the visibility timeout, or ``None`` if none."""
        # fetchall(): a RETURNING statement holds the write lock until it is stepped to the end.
        rows = self.conn.execute(_RECEIVE_SQL, (self._timeout_offset, self.name, self.max_receive)).fetchall()
        if not rows:
            return None
        msg_id, body, received = rows[0]
        return Message(msg_id, bytes(body), received)

    def extend(self, message_id: str, delay: float) -> None:
        """Keep a message invisible for ``delay`` more seconds from now (goqite: now + delay)."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.conn.execute(
            "update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?) where queue = ? and id = ?",
            (_offset(delay), self.name, message_id),
        )

    def delete(self, message_id: str) -> bool:
        """Delete a message; ``False`` if it was already gone (a stale or repeated ack)."""
        cursor = self.conn.execute("delete from goqite where queue = ? and id = ?", (self.name, message_id))
        return cursor.rowcount == 1

    def counts(self) -> QueueCounts:
        """Rows in this queue: total, receivable now, in flight (or delayed), dead."""
        row = self.conn.execute(
            f"select count(*), "
            f"coalesce(sum(received < ? and timeout <= {NOW}), 0), "
            f"coalesce(sum(timeout > {NOW}), 0), "
            f"coalesce(sum(received >= ? and timeout <= {NOW}), 0) "
            f"from goqite where queue = ?",
            (self.max_receive, self.max_receive, self.name),
        ).fetchone()
        return QueueCounts(total=row[0], visible=row[1], in_flight=row[2], dead=row[3])

    def __len__(self) -> int:
        return int(self.conn.execute("select count(*) from goqite where queue = ?", (self.name,)).fetchone()[0])
