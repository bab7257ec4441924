"""What the observed connections and the workers' checks found, filed on the RunResult.

One place turns a run's :class:`~pytest_quaero.core.instruments.Instruments` into the
result's ``extra`` entries that the criteria judge and the reports print:

* ``locks``: statements, write transactions, lock hold and writer wait, per operation;
* ``counts``: the successful path's statements, transactions, rows and connections, per job
  (:mod:`~pytest_quaero.core.counts`), exact and so gated against a baseline without tolerance;
* ``connections``: how many, from where, with which pragmas (read back from each);
* ``hidden_busy``: lock errors the code under test swallowed, and stalls under a held lock;
* ``acks``, ``stalls``, ``sends``, ``silent_writes``: the row-level checks
  (:mod:`~pytest_quaero.core.ledger`, :mod:`~pytest_quaero.core.probe`), each a count and examples.
"""

from __future__ import annotations

from typing import Any

from pytest_quaero.core.counts import counts_from_locks
from pytest_quaero.core.instruments import Instruments, hidden_busy, percentile
from pytest_quaero.core.metrics import RunResult

__all__ = ["STALL_OPERATION", "record_findings", "scheduling_delays"]

#: where a stall under a held write lock is filed among the hidden busy errors
STALL_OPERATION = "queue_receive (stalled)"


def _count(findings: dict[str, dict[str, Any]], kind: str) -> int:
    return int(findings.get(kind, {}).get("count", 0))


def _examples(findings: dict[str, dict[str, Any]], *kinds: str) -> list[str]:
    return [example for kind in kinds for example in findings.get(kind, {}).get("examples", [])][:10]


def record_findings(result: RunResult, instruments: Instruments) -> None:
    """Fill ``result.extra`` from ``instruments`` (after the spawned workers' parts were merged)."""
    found = instruments.findings()
    result.extra["connections"] = instruments.connection_summary()
    result.extra["locks"] = instruments.summary()
    result.extra["counts"] = counts_from_locks(result.extra["locks"], result.total_jobs)
    result.extra["acks"] = {
        "checked": _count(found, "ack_checked"),
        "unchecked": _count(found, "ack_unchecked"),
        "wrong_id": _count(found, "ack_wrong_id"),
        "removed_nothing": _count(found, "ack_removed_nothing"),
        "stale": _count(found, "ack_stale"),
        "deleted_outside_ack": _count(found, "deleted_outside_ack"),
        "examples": _examples(found, "ack_wrong_id", "ack_removed_nothing", "deleted_outside_ack", "ack_stale"),
    }
    stalls = {kind: _count(found, f"stall_{kind}") for kind in ("lock_held", "lock_error_seen", "lock_free")}
    result.extra["stalls"] = {
        "total": sum(stalls.values()), **stalls,
        "examples": _examples(found, "stall_lock_held", "stall_lock_error_seen", "stall_lock_free"),
    }
    result.extra["sends"] = {
        "checked": result.messages_enqueued,
        "before_row": _count(found, "send_before_row"),
        "examples": _examples(found, "send_before_row"),
    }
    result.extra["silent_writes"] = {"total": _count(found, "silent_write"),
                                     "examples": _examples(found, "silent_write")}
    hidden = hidden_busy(result.extra["locks"], result.retry)
    if stalls["lock_held"]:
        # the receive gave up on the lock where no observed connection saw it: a busy error all the same
        hidden["operations"][STALL_OPERATION] = stalls["lock_held"]
        hidden["total"] += stalls["lock_held"]
    result.extra["hidden_busy"] = hidden


def scheduling_delays(delays: list[float]) -> dict[str, float]:
    """How late the monitor's short sleeps woke: p95 and max, ms (``extra["scheduling"]``).

    A thread holding SQLite's write lock that the machine does not let run (other processes on
    the cores, the GIL with thread workers) holds it that much longer through no fault of its
    code; the Write Lock Hold criterion allows for what this run's machine measurably did.
    """
    return {"samples": len(delays), "p95_ms": round(percentile(delays, 0.95) * 1000, 3),
            "max_ms": round(max(delays, default=0.0) * 1000, 3)}
