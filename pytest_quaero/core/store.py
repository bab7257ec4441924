"""The crawl-job store: parents, their ``crawler_url`` children, and progress on the parent.

Modelled on the template's ``crawl_jobs`` SQL: a flat one-level hierarchy where a
child's ``parent_id`` names its parent and a parent's ``parent_id`` is ``''``. The
parent's progress counters move in ONE statement per finished child, and the parent
becomes ``completed`` in that same statement when its pending count reaches 0.

Like the queue, the store does not retry; callers wrap each method in
:meth:`~pytest_quaero.core.retry.Retrier.call`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pytest_quaero.core.retry import transaction

__all__ = ["SCHEMA", "CrawlJobs", "JobStore", "StoreStatements", "create_schema"]

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

SCHEMA = """
create table if not exists crawl_jobs (
  id text primary key,
  parent_id text not null default '',
  job_type text not null default 'parent',
  name text not null default '',
  url text not null default '',
  status text not null default 'pending',
  total_urls integer not null default 0,
  completed_urls integer not null default 0,
  failed_urls integer not null default 0,
  pending_urls integer not null default 0,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  started_at text,
  completed_at text,
  error text not null default ''
);
create index if not exists crawl_jobs_parent_idx on crawl_jobs (parent_id, created_at);
"""

TERMINAL = ("completed", "failed")


@dataclass(frozen=True)
class StoreStatements:
    """The per-job statements in one SQL dialect, built once per dialect, not per call.

    As f-strings inside the methods they were rebuilt (and re-hashed for sqlite3's statement
    cache) on every call, twice inside finish_child's write lock.
    """

    save_parent: str
    create_child: str
    mark_running: str
    attempt_failure: str
    get: str
    children: str
    parent_progress: str

    @classmethod
    def for_dialect(cls, p: str, now: str) -> StoreStatements:
        """``p``: the driver's placeholder (``?``, ``%s``); ``now``: the current time as a column value."""
        unfinished = "status not in ('completed', 'failed')"
        return cls(
            save_parent=(f"insert into crawl_jobs (id, parent_id, job_type, name, status, total_urls, pending_urls, "
                         f"started_at) values ({p}, '', 'parent', {p}, 'running', {p}, {p}, {now})"),
            create_child=("insert into crawl_jobs (id, parent_id, job_type, name, url, status) "
                          f"values ({p}, {p}, 'crawler_url', {p}, {p}, 'pending')"),
            mark_running=(f"update crawl_jobs set status = 'running', started_at = {now}, error = '' "
                          f"where id = {p} and {unfinished}"),
            attempt_failure=f"update crawl_jobs set status = 'pending', error = {p} where id = {p} and {unfinished}",
            get=f"select * from crawl_jobs where id = {p}",
            children=f"select * from crawl_jobs where parent_id = {p} order by created_at, id",
            parent_progress=(
                f"update crawl_jobs set completed_urls = completed_urls + {p}, failed_urls = failed_urls + {p}, "
                "pending_urls = pending_urls - 1, "
                "status = case when pending_urls - 1 <= 0 then 'completed' else status end, "
                f"completed_at = case when pending_urls - 1 <= 0 then {now} else completed_at end "
                f"where id = {p} and pending_urls > 0"),
        )


_SQLITE = StoreStatements.for_dialect("?", NOW)
_FINISH_CHILD_SQL = f"update crawl_jobs set status = ?, completed_at = {NOW}, error = ? where id = ?"
_CHILD_STATUS_SQL = "select status from crawl_jobs where id = ?"


def create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


class _Executes(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


ConnectionT = TypeVar("ConnectionT", bound=_Executes)


class CrawlJobs(Generic[ConnectionT]):
    """Parent and child jobs in ``crawl_jobs``, used through one connection: what every backend shares.

    A backend gives its :class:`StoreStatements`, its transaction and ``finish_child``.
    """

    statements: ClassVar[StoreStatements]

    def __init__(self, conn: ConnectionT, *, begin_immediate: bool = True) -> None:
        self.conn = conn
        self.begin_immediate = begin_immediate

    def _transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def save_parent(self, job_id: str, name: str, total: int) -> None:
        """A running parent expecting ``total`` children, all pending."""
        self.conn.execute(self.statements.save_parent, (job_id, name, total, total))

    def create_child(
        self,
        job_id: str,
        parent_id: str,
        url: str,
        name: str = "",
        enqueue: Callable[[], Any] | None = None,
    ) -> None:
        """Insert a pending ``crawler_url`` child and, in the same transaction, its message.

        One transaction, so a crash can leave neither a child without a message (a job
        nobody runs) nor a message without a child.
        """
        with self._transaction():
            self.conn.execute(self.statements.create_child, (job_id, parent_id, name, url))
            if enqueue is not None:
                enqueue()

    def mark_running(self, job_id: str) -> None:
        self.conn.execute(self.statements.mark_running, (job_id,))

    def record_attempt_failure(self, job_id: str, error: str) -> None:
        """A failed attempt that will be redelivered: back to pending, error kept."""
        self.conn.execute(self.statements.attempt_failure, (error[:500], job_id))

    def finish_child(self, job_id: str, parent_id: str, *, failed: bool = False, error: str = "") -> bool:
        raise NotImplementedError

    def get(self, job_id: str) -> dict[str, Any] | None:
        cursor = self.conn.execute(self.statements.get, (job_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cursor.description], row, strict=True))

    def children(self, parent_id: str) -> list[dict[str, Any]]:
        cursor = self.conn.execute(self.statements.children, (parent_id,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class JobStore(CrawlJobs[sqlite3.Connection]):
    """The crawl-job store on SQLite."""

    statements = _SQLITE

    def _transaction(self) -> AbstractContextManager[Any]:
        return transaction(self.conn, self.begin_immediate)

    def finish_child(self, job_id: str, parent_id: str, *, failed: bool = False, error: str = "") -> bool:
        """Mark a child completed (or finally failed) and move its parent's counters.

        Returns ``False`` when the child had already finished: a second delivery of a
        job that was processed to completion, which the run counts as a duplicate.
        """
        status = "failed" if failed else "completed"
        with self._transaction():
            # Read first: the underflow guard Quaero used. With a deferred BEGIN this read
            # takes a snapshot that the writes below must upgrade; IMMEDIATE avoids that.
            row = self.conn.execute(_CHILD_STATUS_SQL, (job_id,)).fetchone()
            if row is None or row[0] in TERMINAL:
                return False
            self.conn.execute(_FINISH_CHILD_SQL, (status, error[:500], job_id))
            self.conn.execute(self.statements.parent_progress, (0 if failed else 1, 1 if failed else 0, parent_id))
        return True
