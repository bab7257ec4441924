"""RunResult, the spine: everything a run measured, as plain JSON-able data.

Every consumer (criteria, terminal table, HTML, Markdown, JSON, baselines, the
xdist merge) reads this object and nothing else; if a report needs a number, the
run records it here. Derived figures are properties computed from the recorded
counters, so they can never disagree with them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pytest_quaero.core.retry import OpStats

__all__ = ["RESULT_SCHEMA_VERSION", "RunResult", "WorkerRecord", "percentile"]

RESULT_SCHEMA_VERSION = 1


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values): p95 of 20 values is the 19th smallest."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class WorkerRecord:
    """One worker's life: when it really started, how long it was busy, what it did."""

    index: int
    name: str
    started_wall: float | None = None
    start_offset: float | None = None
    stop_offset: float | None = None
    busy_seconds: float = 0.0
    jobs: int = 0

    @property
    def utilization(self) -> float:
        """Busy share of the worker's own lifetime, in percent."""
        if self.start_offset is None or self.stop_offset is None:
            return 0.0
        alive = self.stop_offset - self.start_offset
        return 100.0 * self.busy_seconds / alive if alive > 0 else 0.0


@dataclass
class RunResult:
    """What one scenario run measured. Offsets are seconds since the run started."""

    scenario: str
    parents: int
    children_per_parent: int
    run_id: str
    settings: dict[str, Any]
    settings_sources: dict[str, str] = field(default_factory=dict)
    time_limit: float = 300.0
    db_path: str = ""
    log_path: str = ""
    started_wall: float = 0.0
    sqlite_version: str = ""
    python_version: str = ""
    platform: str = ""
    pragmas: dict[str, Any] = field(default_factory=dict)
    #: run start -> queue drained (or deadline), seconds
    execution_time: float = 0.0
    total_duration: float = 0.0
    timed_out: bool = False
    #: ``[{"phase": key, "label": text, "offset": seconds}]`` in the order they happened
    timeline: list[dict[str, Any]] = field(default_factory=list)
    #: ``[offset, total rows, visible, in flight]`` every sample interval
    queue_samples: list[list[float]] = field(default_factory=list)
    #: per finished job: receive -> done, seconds
    processing_times: list[float] = field(default_factory=list)
    #: per finished job: enqueue -> done, seconds
    latencies: list[float] = field(default_factory=list)
    workers: list[WorkerRecord] = field(default_factory=list)
    #: per operation (save_job, create_child, progress_update, queue_receive, queue_delete, ...)
    retry: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages_enqueued: int = 0
    messages_left: int = 0
    dead_messages: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    children_found: int = 0
    duplicate_completions: int = 0
    duplicate_jobs: list[str] = field(default_factory=list)
    redeliveries: int = 0
    job_errors: int = 0
    producer_errors: list[str] = field(default_factory=list)
    worker_errors: list[str] = field(default_factory=list)
    integrity: dict[str, Any] = field(default_factory=dict)
    #: real lines of this run's log the reports quote: ``{"retry": [...], "retry_outcome": str,
    #: "stagger": [...]}`` (see :func:`pytest_quaero.core.log.log_excerpts`)
    log_excerpts: dict[str, Any] = field(default_factory=dict)
    #: free-form measurements of optional features (faults injected, WAL size, contention ...)
    extra: dict[str, Any] = field(default_factory=dict)
    #: filled by the judge (criteria.evaluate), never by the run
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int = RESULT_SCHEMA_VERSION

    # ------------------------------------------------------------ derived figures

    @property
    def total_jobs(self) -> int:
        return self.parents * self.children_per_parent

    @property
    def retry_totals(self) -> OpStats:
        total = OpStats()
        for data in self.retry.values():
            total.add(OpStats.from_dict(data))
        return total

    @property
    def busy_errors(self) -> int:
        """Every SQLITE_BUSY/LOCKED SQLite raised to the application, retried or not, and those the
        code under test caught itself (seen on its connections, never reaching the retries)."""
        return self.retry_totals.busy_events + self.hidden_busy_errors

    @property
    def lost_jobs(self) -> int:
        """Jobs whose message is gone but that neither completed nor failed (the integrity check counts them)."""
        return int(self.integrity.get("lost_jobs", 0))

    @property
    def hidden_busy_errors(self) -> int:
        """Lock errors the code under test swallowed (``extra["hidden_busy"]``, measured by the run)."""
        return int(self.extra.get("hidden_busy", {}).get("total", 0))

    @property
    def escaped_busy_errors(self) -> int:
        return self.retry_totals.exhausted

    @property
    def messages_deleted(self) -> int:
        return self.messages_enqueued - self.messages_left

    @property
    def deletion_rate(self) -> float:
        """Percent of deletable messages (all but dead ones) gone from the table."""
        deletable = self.messages_enqueued - self.dead_messages
        if deletable <= 0:
            # nothing deletable: only dead messages may remain (they are not the workers' to delete)
            return 100.0 if self.messages_left <= self.dead_messages else 0.0
        return 100.0 * max(0, self.messages_deleted) / deletable

    @property
    def completion_rate(self) -> float:
        return 100.0 * self.jobs_completed / self.total_jobs if self.total_jobs else 0.0

    @property
    def hierarchy_integrity(self) -> float:
        return float(self.integrity.get("integrity_pct", 0.0))

    @property
    def throughput(self) -> float:
        """Completed jobs per second of execution time."""
        return self.jobs_completed / self.execution_time if self.execution_time > 0 else 0.0

    @property
    def p95(self) -> float:
        return percentile(self.processing_times, 95)

    @property
    def latency_p95(self) -> float:
        return percentile(self.latencies, 95)

    @property
    def avg_processing_time(self) -> float:
        return sum(self.processing_times) / len(self.processing_times) if self.processing_times else 0.0

    @property
    def peak_queue_length(self) -> int:
        return int(max((s[1] for s in self.queue_samples), default=0))

    @property
    def avg_queue_length(self) -> float:
        return sum(s[1] for s in self.queue_samples) / len(self.queue_samples) if self.queue_samples else 0.0

    @property
    def stagger_gaps(self) -> list[float]:
        """Measured gaps between consecutive started workers' real start times, seconds.

        Workers that never started (the queue drained before they were due) are left out.
        """
        by_index = sorted(self.workers, key=lambda w: w.index)
        offsets = [w.start_offset for w in by_index if w.start_offset is not None]
        return [later - earlier for earlier, later in itertools.pairwise(offsets)]

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and all(v["passed"] for v in self.verdicts)

    def phase_offset(self, phase: str) -> float | None:
        for entry in self.timeline:
            if entry["phase"] == phase:
                return float(entry["offset"])
        return None

    # ------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["derived"] = {
            "total_jobs": self.total_jobs,
            "busy_errors": self.busy_errors,
            "escaped_busy_errors": self.escaped_busy_errors,
            "messages_deleted": self.messages_deleted,
            "deletion_rate": self.deletion_rate,
            "completion_rate": self.completion_rate,
            "hierarchy_integrity": self.hierarchy_integrity,
            "throughput": self.throughput,
            "p95": self.p95,
            "latency_p95": self.latency_p95,
            "avg_processing_time": self.avg_processing_time,
            "peak_queue_length": self.peak_queue_length,
            "avg_queue_length": self.avg_queue_length,
            "stagger_gaps": self.stagger_gaps,
            "worker_utilization": [w.utilization for w in self.workers],
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["workers"] = [WorkerRecord(**w) for w in values.get("workers", [])]
        return cls(**values)
