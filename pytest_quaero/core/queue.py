"""A goqite-compatible message queue on one SQLite table.

Same table, index, trigger and UTC millisecond timestamps as maragudk/goqite (HEAD),
so a database a Go goqite service wrote reads the same here and the other way round.
Every method is one statement (one transaction): ``receive`` claims the
highest-priority, oldest visible message in a single UPDATE ... RETURNING, so two
workers can never claim the same message and no read-then-write upgrade can fail.

Tables written by goqite before v0.4.0 (v0.1.0 to v0.3.1, the version Quaero pinned) are
read as they are, never altered: they have no ``priority`` column (every message's
priority is then 0, FIFO by ``created``), and a Go process outside UTC wrote their
``timeout`` in local time with its offset (``2026-12-03T11:00:00.000+01:00``). Every
comparison with the clock goes through :data:`TIMEOUT_UTC`, which turns such a value into
its UTC instant; this plugin still writes goqite's own UTC format.

Retrying lock errors is the caller's job (:class:`~pytest_quaero.core.retry.Retrier`), so
the harness counts busy errors the same way for this queue and for a user's own.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

__all__ = ["DUE", "SCHEMA", "TIMEOUT_UTC", "Message", "Queue", "QueueCounts", "check_queue_limits", "create_schema",
           "goqite_columns"]

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

_TABLE = f"""
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
"""
_INDEX = "create index if not exists goqite_queue_priority_created_idx on goqite (queue, priority desc, created);"
SCHEMA = f"{_TABLE}\n{_INDEX}\n"

#: ``timeout`` as UTC text in goqite's format, comparable with :data:`NOW`. A value already in
#: that format (this plugin's, goqite's since v0.4.0) is taken as it is: the check costs ~0.1 us
#: a row where strftime costs ~1 us, and receive looks at every in-flight row ahead of the first
#: visible one. Anything else (an offset, written by goqite before v0.4.0 outside UTC) goes
#: through strftime, which applies the offset; text strftime cannot read is compared as it is.
TIMEOUT_UTC = (
    "(case when timeout glob '????-??-??T??:??:??.???Z' then timeout "
    "else coalesce(strftime('%Y-%m-%dT%H:%M:%fZ', timeout), timeout) end)"
)
#: the message's visibility timeout has passed: it can be received (or, received max_receive times, is dead)
DUE = f"({TIMEOUT_UTC} <= {NOW})"


def goqite_columns(conn: sqlite3.Connection) -> frozenset[str]:
    """The goqite table's columns on ``conn`` (empty if there is no such table)."""
    return frozenset(str(row[1]) for row in conn.execute("pragma table_info(goqite)"))


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the goqite table if missing (idempotent, unlike goqite v0.3.1's Setup).

    A goqite table from before v0.4.0 is left as it is: it has no ``priority`` column to
    index, and its own ``(queue, created)`` index serves the queue's FIFO order.
    """
    conn.executescript(_TABLE)
    if "priority" in goqite_columns(conn):
        conn.execute(_INDEX)


def _offset(seconds: float) -> str:
    return f"{seconds:+.3f} seconds"


_NO_DELAY = _offset(0.0)


# Built once: an f-string with {NOW} in a method is rebuilt (and re-hashed for the statement
# cache lookup) on every call, and receive runs once per job.
def _receive_sql(order: str) -> str:
    return (
        f"update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), received = received + 1 "
        f"where id = (select id from goqite where queue = ? and received < ? and {DUE} "
        f"order by {order} limit 1) returning id, body, received"
    )


_RECEIVE_SQL = _receive_sql("priority desc, created")
_SEND_SQL = (
    "insert into goqite (queue, body, timeout, priority) "
    "values (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), ?) returning id"
)
# goqite before v0.4.0: no priority column (goqite's own receive then ordered by created alone)
_RECEIVE_SQL_NO_PRIORITY = _receive_sql("created")
_SEND_SQL_NO_PRIORITY = (
    "insert into goqite (queue, body, timeout) values (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)) returning id"
)
# total, due, dead: DUE once a row (and again only for the few spent ones), not three times:
# the monitor counts every row of a backlog that may hold 100,000+ messages.
_COUNTS_SQL = (
    f"select count(*), coalesce(sum({DUE}), 0), coalesce(sum(received >= ? and {DUE}), 0) from goqite where queue = ?"
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
    #: acknowledged rows a queue keeps (marked done, not deleted); None: whatever ``total`` holds beyond
    #: the other three (goqite deletes what it acknowledges: none)
    acked: int | None = None


def check_queue_limits(visibility_timeout: float, max_receive: int) -> None:
    """A queue's limits, as every backend's constructor checks them."""
    if visibility_timeout <= 0:
        raise ValueError("visibility_timeout must be > 0")
    if max_receive < 1:
        raise ValueError("max_receive must be >= 1")


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
        check_queue_limits(visibility_timeout, max_receive)
        self.conn = conn
        self.name = name
        self.visibility_timeout = visibility_timeout
        self.max_receive = max_receive
        self._timeout_offset = _offset(visibility_timeout)
        # Read once: the table's shape decides the statements (a queue lives on one connection).
        # No table yet means the one create_schema makes, with priority.
        columns = goqite_columns(conn)
        #: False on a goqite table from before v0.4.0: every message's priority is 0
        self.has_priority = not columns or "priority" in columns
        self._receive_sql = _RECEIVE_SQL if self.has_priority else _RECEIVE_SQL_NO_PRIORITY

    def send(self, body: bytes, delay: float = 0.0, priority: int = 0) -> str:
        """Enqueue ``body``, visible after ``delay`` seconds; returns goqite's ``m_...`` id."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        timeout = _offset(delay) if delay else _NO_DELAY
        if self.has_priority:
            rows = self.conn.execute(_SEND_SQL, (self.name, body, timeout, priority)).fetchall()
        elif priority:
            raise ValueError(
                f"queue {self.name!r}: priority {priority} cannot be stored: this goqite table has no priority "
                "column (a table goqite wrote before v0.4.0); send with priority 0, or migrate the table"
            )
        else:
            rows = self.conn.execute(_SEND_SQL_NO_PRIORITY, (self.name, body, timeout)).fetchall()
        return str(rows[0][0])

    def receive(self) -> Message | None:
        """Claim the next visible message for the visibility timeout, or ``None`` if none."""
        # fetchall(): a RETURNING statement holds the write lock until it is stepped to the end.
        rows = self.conn.execute(self._receive_sql, (self._timeout_offset, self.name, self.max_receive)).fetchall()
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
        total, due, dead = self.conn.execute(_COUNTS_SQL, (self.max_receive, self.name)).fetchone()
        return QueueCounts(total=total, visible=due - dead, in_flight=total - due, dead=dead)

    def __len__(self) -> int:
        return int(self.conn.execute("select count(*) from goqite where queue = ?", (self.name,)).fetchone()[0])
