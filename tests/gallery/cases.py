"""The detection table: each bug class, the criterion it must fail, and its correct twin.

A case runs a tiny scenario (3 parents x 10 children, 1ms jobs, short polls and
timeouts) twice over: with the broken part, and with the correct part under exactly
the same load, settings and handler. The broken run must fail the named criteria; the
correct run must pass every criterion.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_quaero.core.contention import ContentionLoad
from pytest_quaero.core.criteria import Thresholds, evaluate
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.pool import WorkerPool, open_endpoint
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings

from .pools import (
    FirstAttemptCrash,
    JobLog,
    PoisonJob,
    SharedConnection,
    UnstaggeredPool,
    endpoint_with,
    no_busy_timeout_endpoint,
)
from .queues import (
    DeleteOnReceiveQueue,
    SelectThenUpdateQueue,
    SilentDeleteQueue,
    StrictDecodeQueue,
    UncountedReceiveQueue,
    WorkInClaimTransactionQueue,
)
from .stores import ParentApartStore, ReadThenWriteStore

TINY = Scenario("gallery", 3, 10, 30.0)

#: the fast settings every case starts from
BASE = Settings().replace(
    source="gallery", job_time="1ms", stagger="0ms", poll_interval="10ms", visibility_timeout="1s", workers=4,
    retry_backoff="10ms",
)


@dataclass(frozen=True)
class Variant:
    """One side of a case: what is plugged into run_scenario."""

    #: a fresh endpoint factory per run (a shared connection must not outlive its run)
    endpoint_factory: Callable[[], Any] = lambda: open_endpoint
    pool_factory: Callable[..., WorkerPool] = WorkerPool
    settings: dict[str, Any] = field(default_factory=dict)
    #: this side's job handler (None: the case's)
    handler: Callable[..., Any] | None = None


@dataclass(frozen=True)
class Case:
    key: str
    bug: str
    #: the criteria the broken variant must fail, every run
    criteria: tuple[str, ...]
    broken: Variant
    correct: Variant
    settings: dict[str, Any] = field(default_factory=dict)
    handler: Callable[..., Any] | None = None
    contention: str | None = None
    deadline: float = 10.0
    thresholds: dict[str, Any] = field(default_factory=dict)
    scenario: Scenario = TINY


CASES: tuple[Case, ...] = (
    Case(
        "deferred_read_then_write", "deferred read-then-write transaction (SQLITE_BUSY_SNAPSHOT)",
        ("sqlite_busy_errors",),
        broken=Variant(lambda: endpoint_with(store_factory=lambda conn: ReadThenWriteStore(conn, deferred=True))),
        correct=Variant(lambda: endpoint_with(store_factory=lambda conn: ReadThenWriteStore(conn, deferred=False))),
    ),
    Case(
        "non_atomic_claim", "non-atomic claim: SELECT, then UPDATE", ("no_duplicate_processing",),
        broken=Variant(lambda: endpoint_with(SelectThenUpdateQueue)),
        correct=Variant(lambda: endpoint_with(Queue)),
    ),
    Case(
        "busy_timeout_zero", "busy_timeout 0 under a lock-holding writer", ("sqlite_busy_errors",),
        broken=Variant(lambda: no_busy_timeout_endpoint),
        correct=Variant(lambda: open_endpoint),
        contention="writer:hold=30ms,every=60ms",
    ),
    Case(
        "work_inside_write_tx", "slow work inside the claim's write transaction", ("throughput",),
        broken=Variant(lambda: endpoint_with(WorkInClaimTransactionQueue), settings={"job_time": "0ms"}),
        correct=Variant(lambda: endpoint_with(Queue), settings={"job_time": "50ms"}),
        # serialized, 50ms jobs cannot beat 20 jobs/s; four workers outside the lock do ~55
        thresholds={"min_throughput": 30.0},
    ),
    Case(
        "rollback_journal_long_reader", "rollback-journal mode with a long reader", ("sqlite_busy_errors",),
        broken=Variant(settings={"wal": False}),
        correct=Variant(settings={"wal": True}),
        # the reader holds its snapshot longer than a writer waits; WAL writers never wait for it
        settings={"busy_timeout_ms": 300, "retry_attempts": 2},
        contention="reader:snapshot=800ms,gap=100ms",
    ),
    Case(
        # the store's 2ms between read and write keeps transactions open long enough to overlap
        "shared_connection", "one connection shared by every thread", ("hierarchy_integrity",),
        broken=Variant(lambda: SharedConnection(lambda conn: ReadThenWriteStore(conn, deferred=False))),
        correct=Variant(lambda: endpoint_with(store_factory=lambda conn: ReadThenWriteStore(conn, deferred=False))),
    ),
    Case(
        "delete_before_processing", "delete on receive, then a crash mid-job (lost job)", ("completion_rate",),
        broken=Variant(lambda: endpoint_with(DeleteOnReceiveQueue)),
        correct=Variant(lambda: endpoint_with(Queue)),
        handler=FirstAttemptCrash(every=2),
        settings={"visibility_timeout": "200ms"},
    ),
    Case(
        "children_apart_from_parent", "child rows committed apart from their parent", ("hierarchy_integrity",),
        broken=Variant(lambda: endpoint_with(store_factory=ParentApartStore)),
        correct=Variant(lambda: endpoint_with()),
    ),
    Case(
        "no_stagger", "a pool that ignores the stagger", ("worker_staggering",),
        broken=Variant(pool_factory=UnstaggeredPool),
        correct=Variant(pool_factory=WorkerPool),
        # 30ms jobs keep the queue busy past the second worker's start
        settings={"stagger": "500ms", "workers": 2, "job_time": "30ms"},
    ),
    Case(
        "unbounded_redelivery", "unbounded redelivery of a poison message", ("execution_time", "throughput"),
        broken=Variant(lambda: endpoint_with(UncountedReceiveQueue)),
        correct=Variant(lambda: endpoint_with(Queue)),
        handler=PoisonJob(),
        settings={"visibility_timeout": "100ms"},
        deadline=3.5,
    ),
    Case(
        "handler_holds_write_lock", "a handler that keeps its write transaction open while it works",
        ("write_lock_hold",),
        broken=Variant(handler=JobLog(0.02, hold_lock=True)),
        correct=Variant(handler=JobLog(0.02, hold_lock=False)),
    ),
    Case(
        "worker_dies", "a worker killed by an exception in its receive", ("worker_health",),
        broken=Variant(lambda: endpoint_with(StrictDecodeQueue)),
        correct=Variant(lambda: endpoint_with(Queue)),
        settings={"visibility_timeout": "200ms"},
    ),
    Case(
        "silent_delete", "a delete that drops silently", ("queue_deletion",),
        broken=Variant(lambda: endpoint_with(SilentDeleteQueue)),
        correct=Variant(lambda: endpoint_with(Queue)),
        settings={"visibility_timeout": "60s"},
    ),
)

CASE_BY_KEY = {case.key: case for case in CASES}


def run_case(case: Case, *, broken: bool, work_dir: str | Path | None = None) -> RunResult:
    """Run one side of ``case`` on a fresh database; the result carries its verdicts."""
    variant = case.broken if broken else case.correct
    settings = BASE.replace(source=f"gallery {case.key}", **{**case.settings, **variant.settings})
    # Stagger tolerance 250ms: a busy shared machine delays thread starts by 100ms+ now and
    # then; the no-stagger case still fails by its full 500ms.
    thresholds = Thresholds(**{"max_execution_time": case.deadline, "stagger_tolerance": 0.25, **case.thresholds})
    endpoint_factory = variant.endpoint_factory()
    run_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix=f"gallery-{case.key}-"))
    loads = [ContentionLoad.from_spec(case.contention)] if case.contention else []
    for load in loads:
        load.prepare()  # spawned before the run's clock starts
    try:
        result = run_scenario(
            case.scenario, settings, run_dir=run_dir, handler=variant.handler or case.handler,
            endpoint_factory=endpoint_factory,
            pool_factory=variant.pool_factory, deadline=case.deadline, sample_interval=0.05, disturbances=loads,
        )
    finally:
        for load in loads:
            load.close()
        close = getattr(endpoint_factory, "close", None)
        if close is not None:
            close()
    result.verdicts = [verdict.as_dict() for verdict in evaluate(result, thresholds)]
    if work_dir is None:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def failed_criteria(result: RunResult) -> list[str]:
    return [verdict["criterion"] for verdict in result.verdicts if not verdict["passed"]]
