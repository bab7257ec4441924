"""Merging the shards of a ``--quaero-shared-db`` scenario into one RunResult, and judging the overlap.

Pure functions on :class:`~pytest_quaero.core.metrics.RunResult`: no pytest, no SQLite,
no files. The judge node (:mod:`pytest_quaero.xdist.nodes`) reads the shards' results
and hands them here; the merge is what the criteria, the summary and the reports see.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pytest_quaero.core.criteria import Verdict
from pytest_quaero.core.metrics import RunResult, WorkerRecord
from pytest_quaero.core.retry import merge_stats

__all__ = ["OVERLAP_KEY", "combined_stagger", "merge_results", "overlap_verdict"]

#: the criterion of --quaero-shared-db: how long every pool really ran at once
OVERLAP_KEY = "shared_db_overlap"


def _shard_info(part: RunResult) -> dict[str, Any]:
    """What the shard node recorded about itself (worker, queue, barrier) on its result."""
    info: dict[str, Any] = part.extra.get("shared_db", {})
    return info


def combined_stagger(parts: list[RunResult], merged_verdict: Verdict) -> Verdict:
    """Staggering is a property of one pool: judge each shard's, all must pass."""
    shard_verdicts = [
        (_shard_info(part).get("worker", "?"), Verdict.from_dict(data))
        for part in parts
        for data in part.verdicts
        if data["criterion"] == "worker_staggering"
    ]
    if not shard_verdicts:
        return merged_verdict
    measured = "; ".join(f"{worker}: {v.measured}" for worker, v in shard_verdicts)
    return replace(shard_verdicts[0][1], measured=measured, passed=all(v.passed for _, v in shard_verdicts),
                   value=None, detail="judged per worker pool")


def overlap_verdict(merged: RunResult) -> Verdict:
    """How long every shard's pool ran at the same time: the cross-process contention."""
    windows: list[list[float]] = _shard_info(merged).get("windows", [])
    span = max((end for _, end in windows), default=0.0) - min((start for start, _ in windows), default=0.0)
    if len(windows) < 2:
        return Verdict(OVERLAP_KEY, "Cross-Process Overlap", "n/a (one worker)", "> 0s with all pools running", True)
    overlap = max(0.0, min(end for _, end in windows) - max(start for start, _ in windows))
    share = 100.0 * overlap / span if span > 0 else 0.0
    return Verdict(OVERLAP_KEY, "Cross-Process Overlap",
                   f"{overlap:.2f}s of {span:.2f}s ({share:.0f}%) with all {len(windows)} pools running",
                   "> 0s with all pools running", overlap > 0, overlap,
                   "" if overlap > 0 else "the workers' pools never ran at the same time: no contention was tested")


def _window(part: RunResult) -> tuple[float, float]:
    """Wall-clock time from the pool's start until the queue drained."""
    start = part.phase_offset("pool_started") or 0.0
    end = part.phase_offset("jobs_completed")
    end = part.execution_time if end is None else end
    return part.started_wall + start, part.started_wall + end


def _merge_integrity(parts: list[RunResult], workers: list[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for worker, part in zip(workers, parts, strict=True):
        for key, value in part.integrity.items():
            if key == "queries":
                merged.setdefault(key, []).extend(
                    {**query, "title": f"{worker}: {query.get('title', '')}"} for query in value)
            elif isinstance(value, bool) or not isinstance(value, (int, list)):
                merged.setdefault(key, value)
            elif isinstance(value, int):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, []).extend(value)
    expected = merged.get("parents_expected", 0) + merged.get("children_expected", 0)
    ok = merged.get("parents_ok", 0) + merged.get("children_ok", 0)
    merged["integrity_pct"] = 100.0 * ok / expected if expected else 100.0
    return merged


def _merge_samples(parts: list[RunResult], t0: float) -> list[list[float]]:
    """The queues' lengths added up over time (each shard's last sample holds until its next)."""
    events = sorted(
        (part.started_wall + sample[0] - t0, index, sample) for index, part in enumerate(parts)
        for sample in part.queue_samples
    )
    last: dict[int, list[float]] = {}
    merged: list[list[float]] = []
    for offset, index, sample in events:
        last[index] = sample
        merged.append([round(offset, 4), *(sum(s[k] for s in last.values()) for k in (1, 2, 3))])
    return merged


def _merge_timeline(parts: list[RunResult], t0: float) -> list[dict[str, Any]]:
    """Each phase at the time the last shard reached it."""
    phases: dict[str, dict[str, Any]] = {}
    for part in parts:
        for entry in part.timeline:
            offset = part.started_wall + float(entry["offset"]) - t0
            if entry["phase"] == "initialization":
                offset = 0.0
            known = phases.get(entry["phase"])
            if known is None or offset > known["offset"]:
                phases[entry["phase"]] = {**entry, "offset": round(offset, 6)}
    return sorted(phases.values(), key=lambda entry: float(entry["offset"]))


def _merge_workers(parts: list[RunResult], workers: list[str], t0: float) -> list[WorkerRecord]:
    """Every pool's workers, named ``gw0/JobWorker-1`` ..., their offsets moved onto the merged clock."""
    records: list[WorkerRecord] = []
    for worker, part in zip(workers, parts, strict=True):
        shift = part.started_wall - t0
        for record in part.workers:
            records.append(WorkerRecord(
                index=len(records), name=f"{worker}/{record.name}", started_wall=record.started_wall,
                start_offset=None if record.start_offset is None else record.start_offset + shift,
                stop_offset=None if record.stop_offset is None else record.stop_offset + shift,
                busy_seconds=record.busy_seconds, jobs=record.jobs,
            ))
    return records


def _shards_summary(parts: list[RunResult], workers: list[str]) -> list[dict[str, Any]]:
    """One line per shard for the reports' shared-database table."""
    return [
        {"worker": w, "run_id": p.run_id, "queue": _shard_info(p).get("queue"),
         "jobs_completed": p.jobs_completed, "total_jobs": p.total_jobs, "busy_errors": p.busy_errors,
         "execution_time": round(p.execution_time, 4), "throughput": round(p.throughput, 2),
         "barrier_complete": _shard_info(p).get("barrier_complete"),
         "log_path": p.log_path, "passed": p.passed}
        for w, p in zip(workers, parts, strict=True)
    ]


#: counters that simply add up over the shards
_SUMMED = ("messages_enqueued", "messages_left", "dead_messages", "jobs_completed", "jobs_failed",
           "children_found", "duplicate_completions", "redeliveries", "job_errors")


def merge_results(parts: list[RunResult], *, shared_path: str) -> RunResult:
    """One RunResult for the shards of one scenario on a shared database."""
    if not parts:
        raise ValueError("nothing to merge")
    parts = sorted(parts, key=lambda p: str(_shard_info(p).get("worker", "")))
    workers = [str(_shard_info(p).get("worker", f"part{i}")) for i, p in enumerate(parts)]
    first = parts[0]
    t0 = min(p.started_wall for p in parts)
    windows = [_window(p) for p in parts]
    # Start from a copy of the first shard, so fields this function does not know keep a value.
    merged = RunResult.from_dict(first.to_dict())
    merged.run_id = "+".join(p.run_id for p in parts)
    merged.parents = sum(p.parents for p in parts)
    merged.db_path = shared_path
    merged.started_wall = t0
    merged.execution_time = max(p.started_wall + p.execution_time for p in parts) - t0
    merged.total_duration = max(p.started_wall + p.total_duration for p in parts) - t0
    merged.timed_out = any(p.timed_out for p in parts)
    merged.timeline = _merge_timeline(parts, t0)
    merged.queue_samples = _merge_samples(parts, t0)
    merged.processing_times = [t for p in parts for t in p.processing_times]
    merged.latencies = [t for p in parts for t in p.latencies]
    merged.workers = _merge_workers(parts, workers, t0)
    merged.retry = {op: stats.as_dict() for op, stats in sorted(merge_stats([p.retry for p in parts]).items())}
    for name in _SUMMED:
        setattr(merged, name, sum(getattr(p, name) for p in parts))
    merged.duplicate_jobs = [job for p in parts for job in p.duplicate_jobs][:20]
    merged.producer_errors = [f"{w}: {e}" for w, p in zip(workers, parts, strict=True) for e in p.producer_errors][:50]
    merged.worker_errors = [f"{w}: {e}" for w, p in zip(workers, parts, strict=True) for e in p.worker_errors][:50]
    merged.integrity = _merge_integrity(parts, workers)
    merged.settings = {**first.settings, "db_path": shared_path,
                       "workers": sum(int(p.settings.get("workers", 0)) for p in parts),
                       "queue_name": str(_shard_info(first).get("base_queue", "queue")) + "_<worker>"}
    merged.verdicts = []
    merged.extra = {
        "kept": True,
        "shared_db": {
            "merged": True,
            "path": shared_path,
            "workers": len(parts),
            "windows": [[round(a, 6), round(b, 6)] for a, b in windows],
            "shards": _shards_summary(parts, workers),
        },
    }
    return merged
