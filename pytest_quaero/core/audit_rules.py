"""The audit's verdicts, one set of rules for every backend.

:mod:`pytest_quaero.core.audit` (SQLite) and :mod:`pytest_quaero.core.postgresql.audit`
each read the rows their own SQL dialect gives; what makes a queue or a crawl-job
tree pass or fail is decided here, once, so the two audits can never disagree on
the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_quaero.core.criteria import Verdict

__all__ = ["PROGRESS_COUNTERS", "AuditResult", "examples", "judge_orphans", "judge_parents", "judge_queues",
           "progress_columns", "record_tree"]

#: a parent's progress counters, as columns or as keys of ``progress_json``
PROGRESS_COUNTERS = ("total_urls", "completed_urls", "failed_urls", "pending_urls")


@dataclass
class AuditResult:
    """Everything an audit found, on either backend, as plain data; ``verdicts`` per criterion key."""

    path: str
    opened: str
    tables: list[str]
    facts: dict[str, Any] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "opened": self.opened, "tables": self.tables, "facts": self.facts,
                "verdicts": self.verdicts, "skipped": self.skipped}


def examples(rows: list[str], limit: int = 3) -> str:
    return "e.g. " + "; ".join(rows[:limit]) if rows else ""


def progress_columns(cols: set[str], from_json: Callable[[str], str]) -> dict[str, str] | None:
    """Each progress counter of parent ``p`` as an SQL expression, or None when crawl_jobs keeps none.

    This plugin's shape has the counters as columns; Quaero's keeps them in ``progress_json``,
    read with ``from_json(key)``, the backend's JSON extraction.
    """
    if set(PROGRESS_COUNTERS) <= cols:
        return {k: f"p.{k}" for k in PROGRESS_COUNTERS}
    if "progress_json" in cols:
        return {k: from_json(k) for k in PROGRESS_COUNTERS}
    return None


def record_tree(parents: int, children: int, cols: set[str], progress: dict[str, str] | None,
                result: AuditResult) -> None:
    """The tree's facts; without progress counters the two parent checks are skipped, with the reason."""
    result.facts.update({"parents": parents, "children": children,
                         "progress": "progress_json" if "progress_json" in cols and "total_urls" not in cols
                         else "columns"})
    if progress is None:
        reason = "crawl_jobs has neither progress counters nor progress_json"
        result.skipped["children_per_parent"] = result.skipped["parent_progress"] = reason


def judge_queues(per_queue: Mapping[str, Mapping[str, int]], max_receive: int, result: AuditResult) -> None:
    """Messages left and dead messages, from ``{queue: {messages, in_flight, dead}}``.

    Dead is goqite's rule: received ``max_receive`` times and the visibility timeout
    over (a message on its last delivery is still in flight: it may yet be deleted).
    """
    result.facts["queues"] = {q: dict(v) for q, v in per_queue.items()}
    dead = sum(v["dead"] for v in per_queue.values())
    left = sum(v["messages"] for v in per_queue.values()) - dead
    deliverable = ", ".join(f"{q} {n}" for q, v in per_queue.items()
                            if (n := v["messages"] - v["dead"] - v["in_flight"]))
    in_flight = ", ".join(f"{q} {v['in_flight']}" for q, v in per_queue.items() if v["in_flight"])
    detail = "; ".join(part for part in (deliverable and f"still deliverable: {deliverable}",
                                         in_flight and f"in flight (visibility timeout running): {in_flight}") if part)
    result.verdicts["messages_left"] = Verdict(
        "messages_left", "Messages Left in the Queue", str(left), "= 0", left == 0, left, detail=detail).as_dict()
    where = ", ".join(f"{q} {v['dead']}" for q, v in per_queue.items() if v["dead"])
    result.verdicts["dead_messages"] = Verdict(
        "dead_messages", "Dead Messages", str(dead),
        f"= 0 (received >= max_receive {max_receive}, visibility timeout over)", dead == 0, dead,
        detail=f"never delivered again: {where}" if dead else "").as_dict()


def judge_orphans(orphans: int, orphan_rows: Iterable[tuple[Any, Any]], result: AuditResult) -> None:
    """Children whose parent row does not exist; ``orphan_rows`` are ``(child id, parent id)`` examples."""
    result.verdicts["orphans"] = Verdict(
        "orphans", "Orphaned Children", str(orphans), "= 0", orphans == 0, orphans,
        detail=examples([f"{cid} -> missing {pid}" for cid, pid in orphan_rows])).as_dict()


def judge_parents(rows: list[tuple[Any, ...]], result: AuditResult) -> None:
    """Children per parent and parent progress, one row a parent.

    A row: ``(id, status, total, completed, failed, pending, children, children completed,
    children failed)``, the four counters as the parent row holds them.
    """
    count_bad: list[str] = []
    progress_bad: list[str] = []
    for pid, status, total, done, failed, pending, kids, kids_done, kids_failed in rows:
        total, done, failed, pending = (int(v or 0) for v in (total, done, failed, pending))
        if kids != total:
            count_bad.append(f"{pid}: {kids} children, total_urls {total}")
        problems = []
        if (done, failed) != (kids_done, kids_failed):
            problems.append(f"counters completed={done} failed={failed}, children say "
                            f"completed={kids_done} failed={kids_failed} of {kids}")
        if pending != total - done - failed:
            problems.append(f"pending={pending} but total-completed-failed={total - done - failed}")
        if total and (status == "completed") != (pending == 0):
            problems.append(f"status {status!r} with {pending} pending")
        if problems:
            progress_bad.append(f"{pid}: " + ", ".join(problems))
    result.facts["parents_checked"] = len(rows)
    result.verdicts["children_per_parent"] = Verdict(
        "children_per_parent", "Children per Parent", f"{len(rows) - len(count_bad)}/{len(rows)} parents match",
        "children = total_urls for every parent", not count_bad, len(count_bad),
        detail=examples(count_bad)).as_dict()
    result.verdicts["parent_progress"] = Verdict(
        "parent_progress", "Parent Progress vs Child Statuses",
        f"{len(rows) - len(progress_bad)}/{len(rows)} parents agree",
        "counters = child statuses, completed iff pending = 0", not progress_bad, len(progress_bad),
        detail=examples(progress_bad)).as_dict()
