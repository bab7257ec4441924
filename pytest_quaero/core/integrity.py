"""The template's consistency SQL, run for real after the drain.

Each query is the template's own, narrowed to one run's jobs (``id GLOB 'RUN-*'``)
so a kept database that holds several runs still judges each one alone. The rows
come back with the SQL text, so the Markdown report prints the query next to its
real result.
"""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["check", "child_id", "parent_id", "run_glob"]


def parent_id(run_id: str, index: int) -> str:
    return f"{run_id}-parent-{index}"


def child_id(run_id: str, parent_index: int, child_index: int) -> str:
    return f"{run_id}-child-{parent_index}-{child_index}"


def run_glob(run_id: str) -> str:
    return f"{run_id}-*"


ORPHANS_SQL = """SELECT COUNT(*) FROM crawl_jobs
WHERE parent_id != ''
AND parent_id NOT IN (SELECT id FROM crawl_jobs WHERE parent_id = '')
AND id GLOB :run"""

CHILD_COUNT_SQL = """SELECT parent_id, COUNT(*) as child_count
FROM crawl_jobs
WHERE parent_id != '' AND id GLOB :run
GROUP BY parent_id"""

HIERARCHY_SQL = """SELECT
    p.id as parent_id,
    p.name as parent_name,
    COUNT(c.id) as child_count
FROM crawl_jobs p
LEFT JOIN crawl_jobs c ON p.id = c.parent_id
WHERE p.job_type = 'parent' AND p.id GLOB :run
GROUP BY p.id, p.name
ORDER BY child_count DESC"""

PROGRESS_SQL = """SELECT
    p.id, p.status, p.total_urls, p.completed_urls, p.failed_urls, p.pending_urls,
    COALESCE(SUM(c.status = 'completed'), 0) as children_completed,
    COALESCE(SUM(c.status = 'failed'), 0) as children_failed,
    COUNT(c.id) as children
FROM crawl_jobs p
LEFT JOIN crawl_jobs c ON p.id = c.parent_id
WHERE p.job_type = 'parent' AND p.id GLOB :run
GROUP BY p.id"""

UNFINISHED_SQL = """SELECT id, status FROM crawl_jobs
WHERE parent_id != '' AND id GLOB :run AND status NOT IN ('completed', 'failed')
ORDER BY id"""

# the jobs the queue still carries: the plugin's message body is JSON with the job's id
QUEUED_JOBS_SQL = """SELECT json_extract(CAST(body AS TEXT), '$.id') FROM goqite
WHERE queue = :queue AND json_valid(CAST(body AS TEXT))"""

#: examples kept of each kind of problem
MAX_EXAMPLES = 10

# The template's queue query names columns goqite never had (queue_name, received_at);
# this is the same question asked of goqite's real columns.
QUEUE_SQL = """SELECT
    queue as queue_name,
    COUNT(*) as pending_messages,
    COALESCE(SUM(received >= :max_receive), 0) as dead_messages
FROM goqite
WHERE queue = :queue
GROUP BY queue"""


def check(
    conn: sqlite3.Connection,
    run_id: str,
    *,
    parents: int,
    children_per_parent: int,
    queue_name: str,
    max_receive: int,
) -> dict[str, Any]:
    """Orphans, children per parent, parent progress and status, messages left."""
    params = {"run": run_glob(run_id), "queue": queue_name, "max_receive": max_receive}
    orphans = int(conn.execute(ORPHANS_SQL, params).fetchone()[0])
    child_counts = conn.execute(CHILD_COUNT_SQL, params).fetchall()
    hierarchy = conn.execute(HIERARCHY_SQL, params).fetchall()
    progress = conn.execute(PROGRESS_SQL, params).fetchall()
    queue_rows = conn.execute(QUEUE_SQL, params).fetchall()
    unfinished = conn.execute(UNFINISHED_SQL, params).fetchall()
    queued_jobs = {str(row[0]) for row in conn.execute(QUEUED_JOBS_SQL, params) if row[0] is not None}
    # A child neither completed nor failed whose message is gone is lost: acked, or deleted,
    # without being finished. (A queue that keeps its messages elsewhere: see lost_jobs_without_ids.)
    lost = [job for job, _ in unfinished if job not in queued_jobs]

    expected_ids = {parent_id(run_id, p) for p in range(1, parents + 1)}
    found = {row[0]: row for row in progress}
    missing_parents = sorted(expected_ids - set(found))
    missing_children = children_per_parent * len(missing_parents)
    extra_children = 0
    progress_mismatches: list[str] = []
    status_mismatches: list[str] = []
    parents_ok = 0
    for pid, status, total, completed, failed, pending, kids_done, kids_failed, kids in progress:
        problems = []
        if kids < children_per_parent:
            missing_children += children_per_parent - kids
            problems.append("children")
        elif kids > children_per_parent:
            extra_children += kids - children_per_parent
            problems.append("children")
        if (total, completed, failed, pending) != (
            children_per_parent, kids_done, kids_failed, children_per_parent - kids_done - kids_failed
        ):
            progress_mismatches.append(
                f"{pid}: counters total={total} completed={completed} failed={failed} pending={pending}, "
                f"children say completed={kids_done} failed={kids_failed} of {kids}"
            )
            problems.append("progress")
        if (status == "completed") != (pending == 0):
            status_mismatches.append(f"{pid}: status {status!r} with {pending} pending")
            problems.append("status")
        if not problems and pid in expected_ids:
            parents_ok += 1

    children_found = sum(row[1] for row in child_counts)
    children_completed = sum(row[6] for row in progress)
    children_failed = sum(row[7] for row in progress)
    children_ok = max(0, min(children_found - orphans - extra_children, parents * children_per_parent))
    expected_total = parents + parents * children_per_parent
    integrity_pct = 100.0 * (parents_ok + children_ok) / expected_total if expected_total else 100.0
    queue_row = queue_rows[0] if queue_rows else (queue_name, 0, 0)
    return {
        "parents_expected": parents,
        "parents_found": len(found),
        "missing_parents": missing_parents,
        "children_expected": parents * children_per_parent,
        "children_found": children_found,
        "children_completed": children_completed,
        "children_failed": children_failed,
        "orphans": orphans,
        "missing_children": missing_children,
        "extra_children": extra_children,
        "progress_mismatches": progress_mismatches,
        "status_mismatches": status_mismatches,
        "parents_ok": parents_ok,
        "children_ok": children_ok,
        "integrity_pct": integrity_pct,
        "children_per_parent": [[row[0], row[1], row[2]] for row in hierarchy],
        "unfinished_children": len(unfinished),
        "unfinished_examples": [f"{job} ({status})" for job, status in unfinished[:MAX_EXAMPLES]],
        "lost_jobs": len(lost),
        "lost_examples": lost[:MAX_EXAMPLES],
        "messages_left": int(queue_row[1]),
        "dead_messages": int(queue_row[2]),
        "queries": [
            {"title": "Verify no orphaned children", "sql": ORPHANS_SQL, "rows": [[orphans]]},
            {"title": "Verify no missing expected children", "sql": CHILD_COUNT_SQL,
             "rows": [list(r) for r in child_counts]},
            {"title": "Queue Statistics Query", "sql": QUEUE_SQL, "rows": [list(r) for r in queue_rows]},
            {"title": "Job Hierarchy Validation Query", "sql": HIERARCHY_SQL, "rows": [list(r) for r in hierarchy]},
            {"title": "Parent progress against child statuses", "sql": PROGRESS_SQL,
             "rows": [list(r) for r in progress]},
            {"title": "Children neither completed nor failed", "sql": UNFINISHED_SQL,
             "rows": [list(r) for r in unfinished[:MAX_EXAMPLES]]},
        ],
    }


def recount_lost(checks: dict[str, Any], messages_left: int, *, acked: int = 0) -> None:
    """Lost jobs for a queue that keeps its messages outside goqite: counted, not named.

    Its messages' bodies cannot be read, so each message still queued is taken to carry one
    unfinished job, and only the unfinished children beyond those are lost. ``acked``: the
    messages the queue keeps after acknowledging them (``counts()`` of a retaining queue);
    they are not "left", and more of them than finished children means a job was acknowledged
    without finishing, whatever the queue's other figures say.
    """
    finished = int(checks["children_completed"]) + int(checks["children_failed"])
    lost = max(0, int(checks["unfinished_children"]) - max(0, messages_left), acked - finished)
    checks["lost_jobs"] = lost
    checks["acked_messages"] = max(0, acked)
    unfinished = checks["unfinished_children"]
    if not lost:
        checks["lost_examples"] = []
    elif acked > finished:
        checks["lost_examples"] = [f"{acked} messages acknowledged for {finished} finished children: {lost} of "
                                   f"{unfinished} unfinished children were acknowledged without finishing"]
    else:
        checks["lost_examples"] = [f"{lost} of {unfinished} unfinished children have no message left in the queue"]
