"""The run's database work, counted exactly: what a baseline compares without noise.

Times move with the machine; the work a queue does for a job does not. Every observed
connection files its statements by operation (:mod:`pytest_quaero.core.instruments`), and
the retry wrapper files an attempt under its operation only when it succeeded
(:meth:`~pytest_quaero.core.retry.Retrier.call`). So the *successful path* (the
operations' own statements, write transactions, rows changed and connections) is the same
in every run of a scenario, while what depends on timing is kept apart and never gated:

* statements of attempts that met a lock and were retried (``op (retried)``);
* receives that came back empty, the workers' polls (``queue_receive (empty)``);
* the plugin's own harness thread and probes (``harness``).

``result.extra["counts"]`` holds the totals, the same per job, per operation, and the
``not_gated`` figures; :func:`count_metrics` flattens them for JSON, JUnit and baselines.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_quaero.core.instruments import HARNESS_OPERATION, IDLE, RETRIED

__all__ = ["COUNTS", "KINDS", "SERVER_ROWS", "count_metrics", "counts_from_locks", "server_count_metrics",
           "server_rows_per_job"]

#: statement kinds, as the observed connection classifies them
KINDS = ("select", "insert", "update", "delete", "begin", "commit", "rollback", "other")
#: the rows the database server counted per job (PostgreSQL: the run's own schema); gated exactly
SERVER_ROWS = ("rows_inserted", "rows_updated", "rows_deleted")
#: the counts of each operation and of the run (besides the statements of each kind)
COUNTS = ("statements", "write_transactions", "rollbacks", "rows_changed", "connections")


def _counts(data: Mapping[str, Any]) -> dict[str, int]:
    statements = data.get("statements", {})
    out = {kind: int(statements.get(kind, 0)) for kind in KINDS}
    out["statements"] = sum(int(n) for n in statements.values())
    # a one-statement write outside a transaction is a write transaction of its own
    out["write_transactions"] = int(data.get("write_transactions", 0)) + int(data.get("autocommit_writes", 0))
    out["rollbacks"] = int(data.get("rollbacks", 0))
    out["rows_changed"] = int(data.get("rows_changed", 0))
    out["connections"] = int(data.get("connections", 0))
    return out


def counts_from_locks(locks: Mapping[str, Any], jobs: int) -> dict[str, Any]:
    """``extra["counts"]`` from ``extra["locks"]`` (per operation) and the scenario's job count."""
    operations: dict[str, dict[str, int]] = {}
    not_gated = {"retried_statements": 0, "poll_statements": 0, "harness_statements": 0}
    for label, data in sorted(locks.get("operations", {}).items()):
        counted = _counts(data)
        if label.endswith(RETRIED):
            not_gated["retried_statements"] += counted["statements"]
        elif label.endswith(IDLE):
            not_gated["poll_statements"] += counted["statements"]
        elif label == HARNESS_OPERATION:
            not_gated["harness_statements"] += counted["statements"]
        else:
            operations[label] = counted
    total = {key: sum(op[key] for op in operations.values()) for key in (*KINDS, *COUNTS)}
    per_job = {key: round(value / jobs, 4) if jobs else 0.0 for key, value in total.items()}
    return {"jobs": jobs, "total": total, "per_job": per_job, "operations": operations, "not_gated": not_gated}


def count_metrics(counts: Mapping[str, Any]) -> dict[str, float | int]:
    """Flat names for JSON metrics, JUnit properties and baselines.

    ``statements``, ``statements_per_job``, ``statements.select``, ``statements_per_job.select``,
    ``write_transactions(_per_job)``, ``rollbacks``, ``rows_changed(_per_job)``, ``connections``,
    and per operation ``statements_per_job.<operation>``.
    """
    if not counts:
        return {}
    total, per_job, jobs = counts["total"], counts["per_job"], int(counts.get("jobs", 0))
    out: dict[str, float | int] = {}
    for key in COUNTS:
        out[key] = total[key]
        out[f"{key}_per_job"] = per_job[key]
    for kind in KINDS:
        out[f"statements.{kind}"] = total[kind]
        out[f"statements_per_job.{kind}"] = per_job[kind]
    for op, data in counts.get("operations", {}).items():
        out[f"statements_per_job.{op}"] = round(data["statements"] / jobs, 4) if jobs else 0.0
    for key, value in counts.get("not_gated", {}).items():
        out[key] = value
    return out


def server_rows_per_job(extra: Mapping[str, Any]) -> dict[str, float] | None:
    """Rows inserted, updated and deleted per job as the server counted them, or None (not counted).

    Only PostgreSQL keeps such counters (``extra["postgresql"]["stats"]``, from
    ``pg_stat_user_tables`` of the run's own schema): exact for the run, whoever wrote the rows,
    in whatever language. Row counts, not scans: how often a poll scans an index depends on timing.
    """
    stats = (extra.get("postgresql") or {}).get("stats") or {}
    per_job = stats.get("rows_per_job")
    if not isinstance(per_job, Mapping) or not all(key in per_job for key in SERVER_ROWS):
        return None
    return {key: float(per_job[key]) for key in SERVER_ROWS}


def server_count_metrics(extra: Mapping[str, Any]) -> dict[str, float]:
    """``server_rows_inserted_per_job`` and the like, for JSON, JUnit and baselines (empty on SQLite)."""
    per_job = server_rows_per_job(extra)
    return {} if per_job is None else {f"server_{key}_per_job": value for key, value in per_job.items()}
