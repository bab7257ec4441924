"""The template's consistency SQL on PostgreSQL, judged by the same code as on SQLite.

:func:`pytest_quaero.core.integrity.check` asks its questions in SQLite's SQL; here each one
has its PostgreSQL twin (``LIKE`` for ``GLOB``, ``count(*) filter`` for ``SUM(bool)``, the
message bodies' job ids read in Python where SQLite used ``json_extract``). :class:`Twins`
answers ``check`` with the twins' rows, so what the rows mean is decided in one place for
both backends, and the report prints the PostgreSQL statements that really ran.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg

from pytest_quaero.core import integrity

__all__ = ["TWINS", "Twins", "check"]

_RUN = "id like %(run)s"

TWINS: dict[str, str] = {
    integrity.ORPHANS_SQL: f"""SELECT COUNT(*) FROM crawl_jobs
WHERE parent_id != ''
AND parent_id NOT IN (SELECT id FROM crawl_jobs WHERE parent_id = '')
AND {_RUN}""",
    integrity.CHILD_COUNT_SQL: f"""SELECT parent_id, COUNT(*) as child_count
FROM crawl_jobs
WHERE parent_id != '' AND {_RUN}
GROUP BY parent_id""",
    integrity.HIERARCHY_SQL: """SELECT
    p.id as parent_id,
    p.name as parent_name,
    COUNT(c.id) as child_count
FROM crawl_jobs p
LEFT JOIN crawl_jobs c ON p.id = c.parent_id
WHERE p.job_type = 'parent' AND p.id like %(run)s
GROUP BY p.id, p.name
ORDER BY child_count DESC""",
    integrity.PROGRESS_SQL: """SELECT
    p.id, p.status, p.total_urls, p.completed_urls, p.failed_urls, p.pending_urls,
    COUNT(c.id) FILTER (WHERE c.status = 'completed') as children_completed,
    COUNT(c.id) FILTER (WHERE c.status = 'failed') as children_failed,
    COUNT(c.id) as children
FROM crawl_jobs p
LEFT JOIN crawl_jobs c ON p.id = c.parent_id
WHERE p.job_type = 'parent' AND p.id like %(run)s
GROUP BY p.id""",
    integrity.UNFINISHED_SQL: f"""SELECT id, status FROM crawl_jobs
WHERE parent_id != '' AND {_RUN} AND status NOT IN ('completed', 'failed')
ORDER BY id""",
    integrity.QUEUED_JOBS_SQL: "SELECT body FROM goqite WHERE queue = %(queue)s",
    integrity.QUEUE_SQL: """SELECT
    queue as queue_name,
    COUNT(*) as pending_messages,
    COUNT(*) FILTER (WHERE received >= %(max_receive)s) as dead_messages
FROM goqite
WHERE queue = %(queue)s
GROUP BY queue""",
}


def _job_id(body: Any) -> str | None:
    """The job id in a message body that is the plugin's JSON, else None (SQLite: json_extract)."""
    try:
        value = json.loads(bytes(body).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    job = value.get("id") if isinstance(value, dict) else None
    return None if job is None else str(job)


class _Rows:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


class Twins:
    """Stands in for the SQLite connection :func:`integrity.check` expects, running each twin instead."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sqlite_sql: str, params: dict[str, Any]) -> _Rows:
        twin = TWINS[sqlite_sql]
        values = dict(params)
        if "run" in values:
            values["run"] = str(values["run"]).replace("*", "%")  # the run's GLOB pattern as a LIKE pattern
        rows = [tuple(row) for row in self.conn.execute(twin, values).fetchall()]
        if sqlite_sql == integrity.QUEUED_JOBS_SQL:
            rows = [(job,) for (body,) in rows if (job := _job_id(body)) is not None]
        return _Rows(rows)


def check(conn: psycopg.Connection[Any], run_id: str, *, parents: int, children_per_parent: int, queue_name: str,
          max_receive: int) -> dict[str, Any]:
    """:func:`pytest_quaero.core.integrity.check` on PostgreSQL; the queries it reports are the twins."""
    checks = integrity.check(Twins(conn), run_id, parents=parents,  # type: ignore[arg-type]
                             children_per_parent=children_per_parent, queue_name=queue_name, max_receive=max_receive)
    by_sqlite = {sqlite_sql.strip(): twin for sqlite_sql, twin in TWINS.items()}
    for query in checks.get("queries", []):
        query["sql"] = by_sqlite.get(str(query["sql"]).strip(), query["sql"])
    return checks
