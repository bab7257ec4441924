"""goqite's queue on PostgreSQL (``SQLFlavorPostgreSQL``), with the fix goqite PR #72 proposes.

The table, its trigger and its index are goqite's ``schema_postgres.sql`` (timestamptz
times, bytea body, ``m_`` + 32 hex ids), except that the id comes from the built-in
``gen_random_uuid()`` instead of pgcrypto's ``gen_random_bytes()``: same shape, and no
extension a role without CREATE on the database could not add.

``receive`` is goqite's one UPDATE ... RETURNING claim, highest priority then oldest, with
``received`` counted against max_receive and the visibility timeout moved. goqite v0.4.0 runs
it under SERIALIZABLE with a plain subquery: two workers claiming at once then fail with
40001 (PR #72), and under READ COMMITTED the same statement would hand one message to both.
Here it runs in autocommit (READ COMMITTED unless the DSN says otherwise) with ``FOR UPDATE
SKIP LOCKED`` in the subquery: a worker passes over a message another worker is claiming
instead of waiting for it or failing. Subclasses change :attr:`PgQueue.RECEIVE_SQL` and
:attr:`PgQueue.RECEIVE_ISOLATION` to be goqite's own (the tests' gallery does).

The same methods as :class:`pytest_quaero.core.queue.Queue`, so the worker loop, the
producers and the monitor do not ask which backend they run on. Retrying is the caller's.
"""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg

from pytest_quaero.core import ledger
from pytest_quaero.core.postgresql.connect import transaction
from pytest_quaero.core.queue import Message, QueueCounts, check_queue_limits

__all__ = ["GOQITE_RECEIVE_SQL", "RECEIVE_SQL", "SCHEMA", "PgQueue", "create_schema"]

SCHEMA = """
create or replace function update_timestamp()
returns trigger as $$
begin
   new.updated = now();
   return new;
end;
$$ language plpgsql;

create table goqite (
  id text primary key default ('m_' || replace(gen_random_uuid()::text, '-', '')),
  created timestamptz not null default now(),
  updated timestamptz not null default now(),
  queue text not null,
  body bytea not null,
  timeout timestamptz not null default now(),
  received integer not null default 0,
  priority integer not null default 0
);

create trigger goqite_updated_timestamp
before update on goqite
for each row execute procedure update_timestamp();

create index goqite_queue_priority_created_idx on goqite (queue, priority desc, created);
"""



def _claim_sql(row_lock: str) -> str:
    return f"""
update goqite
set timeout = now() + make_interval(secs => %(timeout)s), received = received + 1
where id = (
  select id from goqite
  where queue = %(queue)s and now() >= timeout and received < %(max_receive)s
  order by priority desc, created
  limit 1{row_lock}
)
returning id, body, received"""


#: the claim, with goqite's parameters in goqite's order: timeout, queue, max_receive
RECEIVE_SQL = _claim_sql("\n  for update skip locked")
#: goqite v0.4.0's own claim (no row lock in the subquery), run by goqite under SERIALIZABLE
GOQITE_RECEIVE_SQL = _claim_sql("")

_DUE = "now() >= timeout"
_COUNTS_SQL = (f"select count(*), count(*) filter (where {_DUE}), "
               f"count(*) filter (where received >= %s and {_DUE}) from goqite where queue = %s")


def create_schema(conn: psycopg.Connection[Any]) -> None:
    """goqite's PostgreSQL schema, once (a run's schema starts empty; an existing table is kept)."""
    row = conn.execute("select to_regclass('goqite') is not null").fetchone()
    if row is not None and not row[0]:
        conn.execute(SCHEMA)


class PgQueue:
    """One named queue in the ``goqite`` table, used through one connection."""

    RECEIVE_SQL: ClassVar[str] = RECEIVE_SQL
    #: None: the claim is one autocommit statement; else it runs in BEGIN ISOLATION LEVEL <this>
    RECEIVE_ISOLATION: ClassVar[str | None] = None

    def __init__(self, conn: psycopg.Connection[Any], name: str = "quaero_jobs", *,
                 visibility_timeout: float = 5.0, max_receive: int = 3) -> None:
        check_queue_limits(visibility_timeout, max_receive)
        self.conn = conn
        self.name = name
        self.visibility_timeout = visibility_timeout
        self.max_receive = max_receive
        self.has_priority = True

    def send(self, body: bytes, delay: float = 0.0, priority: int = 0) -> str:
        """Enqueue ``body``, visible after ``delay`` seconds; returns goqite's ``m_...`` id."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        row = self.conn.execute(
            "insert into goqite (queue, body, timeout, priority) "
            "values (%s, %s, now() + make_interval(secs => %s), %s) returning id",
            (self.name, body, float(delay), priority),
        ).fetchone()
        assert row is not None
        return str(row[0])

    def receive(self) -> Message | None:
        """Claim the next visible message for the visibility timeout, or ``None`` if none."""
        params = {"timeout": float(self.visibility_timeout), "queue": self.name, "max_receive": self.max_receive}
        if self.RECEIVE_ISOLATION is None:
            row = self.conn.execute(self.RECEIVE_SQL, params).fetchone()
        else:
            with transaction(self.conn, self.RECEIVE_ISOLATION):
                row = self.conn.execute(self.RECEIVE_SQL, params).fetchone()
        if row is None:
            return None
        msg_id, body, received = row
        return Message(str(msg_id), bytes(body), int(received))

    def extend(self, message_id: str, delay: float) -> None:
        """Keep a message invisible for ``delay`` more seconds from now (goqite: now + delay)."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.conn.execute("update goqite set timeout = now() + make_interval(secs => %s) where queue = %s and id = %s",
                          (float(delay), self.name, message_id))

    def delete(self, message_id: str) -> bool:
        """Delete a message; ``False`` if it was already gone. Which row went is told to the run's ack check."""
        removed = [str(row[0]) for row in self.conn.execute(
            "delete from goqite where queue = %s and id = %s returning id", (self.name, message_id)).fetchall()]
        watch = ledger.current_watch()
        if watch is not None and watch.expected is not None:
            watch.armed += 1
            watch.removed.extend(removed)
        return bool(removed)

    def counts(self) -> QueueCounts:
        """Rows in this queue: total, receivable now, in flight (or delayed), dead."""
        row = self.conn.execute(_COUNTS_SQL, (self.max_receive, self.name)).fetchone()
        assert row is not None
        total, due, dead = (int(value) for value in row)
        return QueueCounts(total=total, visible=due - dead, in_flight=total - due, dead=dead)

    def __len__(self) -> int:
        row = self.conn.execute("select count(*) from goqite where queue = %s", (self.name,)).fetchone()
        return int(row[0]) if row else 0
