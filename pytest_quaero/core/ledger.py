"""Row-level facts the observed connections report: what each ack removed, what each send found.

Counting statements says *that* a delete ran, not *which* message it removed. A run's
observed connections (:mod:`pytest_quaero.core.observed`) therefore get two TEMP triggers
on the goqite table, per connection and invisible to every other (nothing is written to the
database file): each row a DELETE removes, and each message an INSERT adds whose job has no
``crawl_jobs`` row (in the inserting transaction's own view), is written to a TEMP table.
Right after a DELETE on goqite, or an INSERT that changed more rows than it inserted (or that
returns rows, and so has not counted its changes yet), the connection reads and empties that
table (:func:`collect`); a correct send writes nothing there. Plain SQL, not a Python callback: SQLite
would call a callback while holding the connection's mutex, and a thread sharing that
connection could then hold the GIL waiting for the mutex (a deadlock in CPython 3.11).

A worker wraps each ack in :func:`acking`: the ids removed while it runs are the ack's, so
an ack that removed another message (or none) is seen at once, named, whatever the queue's
code looks like. :func:`watching` counts the statements and changed rows of a store call,
so a status update or completion that changed nothing is seen too.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass, field

from pytest_quaero.core.instruments import Instruments

__all__ = ["Watch", "acking", "arm", "collect", "current_watch", "watching"]

#: a message body's job id, when the body is JSON with an ``id`` (the plugin's own format)
_BODY_JOB_ID = "(case when json_valid(cast(new.body as text)) then json_extract(cast(new.body as text), '$.id') end)"

_TRIGGERS = f"""
create temp table if not exists quaero_ledger (kind text, message_id text, queue text, job_id text, job_row integer);
create temp trigger if not exists quaero_ledger_removed after delete on main.goqite
begin insert into quaero_ledger values ('removed', old.id, old.queue, null, null); end;
create temp trigger if not exists quaero_ledger_sent after insert on main.goqite
when {_BODY_JOB_ID} is not null and not exists (select 1 from main.crawl_jobs where id = {_BODY_JOB_ID})
begin insert into quaero_ledger values ('sent_before_row', new.id, new.queue, {_BODY_JOB_ID}, 0); end;
"""
_COLLECT_SQL = "delete from temp.quaero_ledger returning kind, message_id, queue, job_id, job_row"

_thread = threading.local()


@dataclass
class Watch:
    """What the observed connections did in this thread while a store or queue call ran."""

    #: the message id an ack was given (None: not an ack)
    expected: str | None = None
    statements: int = 0
    #: statements on connections that carry the ledger's triggers (a delete there is seen by id)
    armed: int = 0
    rows: int = 0
    removed: list[str] = field(default_factory=list)

    @property
    def observed(self) -> bool:
        return self.statements > 0

    def ack_verdict(self) -> str:
        """``ok``, ``wrong_id``, ``removed_nothing`` or ``unchecked`` (no armed connection ran)."""
        if not self.armed:
            return "unchecked"
        if any(removed != self.expected for removed in self.removed):
            return "wrong_id"
        return "ok" if self.removed else "removed_nothing"


def current_watch() -> Watch | None:
    watch: Watch | None = getattr(_thread, "watch", None)
    return watch


class watching:
    """Count what this thread's observed connections do inside the block (a class: it runs per job)."""

    __slots__ = ("previous", "watch")

    def __init__(self, expected: str | None = None) -> None:
        self.watch = Watch(expected)
        self.previous: Watch | None = None

    def __enter__(self) -> Watch:
        self.previous = getattr(_thread, "watch", None)
        _thread.watch = self.watch
        return self.watch

    def __exit__(self, *exc_info: object) -> None:
        _thread.watch = self.previous


def acking(message_id: str) -> watching:
    """:class:`watching` an ack of ``message_id``: which rows of goqite it removes."""
    return watching(message_id)


def arm(conn: sqlite3.Connection) -> bool:
    """Give ``conn`` the ledger's table and triggers; False when there are no goqite/crawl_jobs tables yet."""
    tables = {row[0] for row in sqlite3.Connection.execute(
        conn, "select name from main.sqlite_master where type = 'table' and name in ('goqite', 'crawl_jobs')")}
    if tables != {"goqite", "crawl_jobs"}:
        return False
    sqlite3.Connection.executescript(conn, _TRIGGERS)
    return True


def collect(conn: sqlite3.Connection, instruments: Instruments) -> int:
    """File what the triggers wrote since the last call; returns how many ledger rows there were."""
    level = conn.isolation_level
    if level is None or conn.in_transaction:
        rows = sqlite3.Connection.execute(conn, _COLLECT_SQL).fetchall()
    else:
        # sqlite3's legacy mode would open a transaction before this DELETE and leave it open
        conn.isolation_level = None
        try:
            rows = sqlite3.Connection.execute(conn, _COLLECT_SQL).fetchall()
        finally:
            conn.isolation_level = level
    watch = current_watch()
    for kind, message_id, queue, job_id, _job_row in rows:
        if queue != instruments.queue_name:
            continue  # another queue in the same table: not this run's business
        if kind == "removed":
            if watch is not None and watch.expected is not None:
                watch.removed.append(str(message_id))
            else:
                instruments.note("deleted_outside_ack", f"{message_id} deleted outside any ack")
        else:
            instruments.note("send_before_row", f"message {message_id} sent before job row {job_id} existed")
    return len(rows)
