"""The crawl-job store on PostgreSQL: the same flat parent/child hierarchy and progress rules.

The columns are :mod:`pytest_quaero.core.store`'s (times are timestamptz), the rules too: a
child's row and its message in one transaction; a finished child moves its parent's counters,
and the parent becomes ``completed`` when its pending count reaches 0. Finishing is one
statement here (the child's guarded update and the parent's, as data-modifying CTEs): on
PostgreSQL each statement is a round trip, and a transaction of several keeps the parent's
row locked across them, where SQLite's in-process statements take microseconds. The child is
always locked before its parent, so two completions never wait on each other in a circle.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import psycopg

from pytest_quaero.core.postgresql.connect import transaction
from pytest_quaero.core.store import CrawlJobs, StoreStatements

__all__ = ["SCHEMA", "PgJobStore", "create_schema"]

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
  created_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  error text not null default ''
);
create index if not exists crawl_jobs_parent_idx on crawl_jobs (parent_id, created_at);
"""

# The child's guard, its status and its parent's counters in ONE statement: one round trip, no
# client time while a row is locked. A second delivery of the same child waits for the first on
# the child's row, then finds it finished (READ COMMITTED re-checks the newer row) and moves nothing.
_FINISH_SQL = """
with child as (
  update crawl_jobs set status = %(status)s, completed_at = now(), error = %(error)s
  where id = %(job)s and status not in ('completed', 'failed')
  returning id
), parent as (
  update crawl_jobs set
    completed_urls = completed_urls + %(done)s, failed_urls = failed_urls + %(failed)s,
    pending_urls = pending_urls - 1,
    status = case when pending_urls - 1 <= 0 then 'completed' else status end,
    completed_at = case when pending_urls - 1 <= 0 then now() else completed_at end
  where id = %(parent)s and pending_urls > 0 and exists (select 1 from child)
  returning id
)
select count(*) from child"""
_STATEMENTS = StoreStatements.for_dialect("%s", "now()")
#: a parent's counters moved by one finished child (for stores that finish in several statements)
PARENT_PROGRESS_SQL = _STATEMENTS.parent_progress


def create_schema(conn: psycopg.Connection[Any]) -> None:
    conn.execute(SCHEMA)


class PgJobStore(CrawlJobs[psycopg.Connection[Any]]):
    """Parent and child jobs in ``crawl_jobs``, used through one connection.

    ``begin_immediate`` is kept for the API's sake: SQLite's BEGIN IMMEDIATE has no
    PostgreSQL twin, row locks are taken by the statements.
    """

    statements = _STATEMENTS

    def _transaction(self) -> AbstractContextManager[Any]:
        return transaction(self.conn)

    def finish_child(self, job_id: str, parent_id: str, *, failed: bool = False, error: str = "") -> bool:
        """Mark a child completed (or finally failed) and move its parent's counters, in one statement.

        Returns ``False`` when the child had already finished (a second delivery: a duplicate).
        """
        row = self.conn.execute(_FINISH_SQL, {"status": "failed" if failed else "completed", "error": error[:500],
                                              "job": job_id, "parent": parent_id, "done": 0 if failed else 1,
                                              "failed": 1 if failed else 0}).fetchone()
        return bool(row and row[0])
