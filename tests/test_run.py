"""run_scenario end to end on tiny trees, with threads and with processes, real files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from pytest_quaero.core.criteria import evaluate, thresholds_for
from pytest_quaero.core.jobs import Job, JobContext
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.run import PHASES, RunError, run_scenario
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings

TINY = Scenario("tiny", 2, 5, 60.0)
STAGGER = 0.1
#: timing criteria relaxed for a shared, noisy machine; the counting criteria keep the template's numbers
RELAXED = {"*": {"stagger_tolerance": "400ms", "min_throughput": "0.5"}}


def _settings(**changes: Any) -> Settings:
    base = dict(workers=3, stagger=f"{STAGGER}s", job_time="1ms", poll_interval="50ms")
    return Settings().replace(source="test", **{**base, **changes})


# Handlers live at module level so a spawned worker process can unpickle them.
class FailFirstDelivery:
    """Fails each job's first delivery: goqite redelivers it after the visibility timeout."""

    def __call__(self, job: Job, context: JobContext) -> None:
        if job.attempt == 1:
            raise RuntimeError(f"transient failure of {job.job_id}")


class AlwaysFail:
    def __call__(self, job: Job, context: JobContext) -> None:
        raise RuntimeError("permanent failure")


def _children(db_path: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db_path)
    try:
        cursor = conn.execute("select * from crawl_jobs order by id")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        conn.close()


@pytest.fixture(scope="module", params=["thread", "process"])
def healthy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    run_dir = tmp_path_factory.mktemp(f"run-{request.param}")
    return run_scenario(TINY, _settings(worker_mode=request.param), run_dir=run_dir)


def test_counts(healthy: RunResult) -> None:
    r = healthy
    assert r.scenario == "tiny" and r.total_jobs == 10
    assert r.messages_enqueued == 10
    assert r.children_found == 10
    assert r.jobs_completed == 10 and r.jobs_failed == 0
    assert r.messages_left == 0 and r.dead_messages == 0
    assert r.duplicate_completions == 0 and r.redeliveries == 0 and r.job_errors == 0
    assert r.producer_errors == [] and r.worker_errors == []
    assert r.busy_errors == 0
    assert sum(w.jobs for w in r.workers) == 10
    assert len(r.processing_times) == 10 and len(r.latencies) == 10
    assert not r.timed_out
    assert r.execution_time > 0
    assert r.retry["create_child"]["operations"] == 10
    assert r.retry["progress_update"]["operations"] == 10
    assert r.retry["queue_delete"]["operations"] == 10
    assert r.retry["save_job"]["operations"] == 2 + 10  # the parents, then each child marked running
    assert r.retry["queue_receive"]["operations"] >= 10
    assert r.pragmas["journal_mode"] == "wal" and r.pragmas["busy_timeout_ms"] == 10_000
    assert r.settings["worker_mode"] in ("thread", "process")
    assert r.settings_sources["workers"] == "test"


def test_timeline_has_the_template_phases_in_order(healthy: RunResult) -> None:
    phases = [entry["phase"] for entry in healthy.timeline]
    assert sorted(phases) == sorted(PHASES)
    offsets = [entry["offset"] for entry in healthy.timeline]
    assert offsets == sorted(offsets)
    assert phases[0] == "initialization" and phases[-1] == "completed"
    order = {phase: i for i, phase in enumerate(phases)}
    assert order["pool_started"] < order["parent_creation_started"] < order["queueing_completed"]
    assert order["pool_started"] < order["processing_started"] < order["jobs_completed"] < order["validation"]
    assert all(entry["label"] == PHASES[entry["phase"]] for entry in healthy.timeline)


def test_workers_start_about_k_times_stagger_after_the_pool(healthy: RunResult) -> None:
    pool_started = healthy.phase_offset("pool_started")
    assert pool_started is not None
    offsets = [w.start_offset for w in sorted(healthy.workers, key=lambda w: w.index)]
    assert all(o is not None for o in offsets)
    for k, offset in enumerate(offsets):
        since_pool = offset - pool_started  # type: ignore[operator]
        assert since_pool >= k * STAGGER - 0.005, (k, since_pool)  # never early
        assert since_pool <= k * STAGGER + 2.0, (k, since_pool)  # generous: a shared machine
    assert len(healthy.stagger_gaps) == 2
    assert all(gap > 0 for gap in healthy.stagger_gaps)
    assert [w.name for w in healthy.workers] == ["JobWorker-1", "JobWorker-2", "JobWorker-3"]
    assert all(w.stop_offset is not None and w.stop_offset >= w.start_offset for w in healthy.workers)  # type: ignore[operator]


def test_integrity(healthy: RunResult) -> None:
    i = healthy.integrity
    assert i["orphans"] == 0
    assert i["missing_parents"] == [] and i["missing_children"] == 0 and i["extra_children"] == 0
    assert i["progress_mismatches"] == [] and i["status_mismatches"] == []
    assert i["integrity_pct"] == 100.0
    assert (i["parents_found"], i["children_completed"], i["children_failed"]) == (2, 10, 0)
    assert sorted(row[2] for row in i["children_per_parent"]) == [5, 5]
    assert {q["title"] for q in i["queries"]} >= {"Verify no orphaned children", "Queue Statistics Query"}
    rows = _children(healthy.db_path)
    parents = [row for row in rows if row["job_type"] == "parent"]
    assert [(p["status"], p["completed_urls"], p["pending_urls"]) for p in parents] == [("completed", 5, 0)] * 2


def test_files_and_log(healthy: RunResult) -> None:
    assert Path(healthy.db_path).is_file()
    log = Path(healthy.log_path).read_text()
    assert f"Scenario tiny: 2 parents x 5 children = 10 jobs, run {healthy.run_id}" in log
    for n in (1, 2, 3):
        assert f"JobWorker-{n} Worker {n} started successfully" in log


def test_result_round_trips(healthy: RunResult) -> None:
    data = healthy.to_dict()
    assert data["derived"]["completion_rate"] == 100.0
    assert data["derived"]["stagger_gaps"] == healthy.stagger_gaps
    through_json = json.loads(json.dumps(data))
    back = RunResult.from_dict(through_json)
    assert back == healthy
    assert back.to_dict() == data


def test_criteria_all_pass(healthy: RunResult) -> None:
    verdicts = evaluate(healthy, thresholds_for(TINY, RELAXED))
    assert [v.criterion for v in verdicts] == [
        "execution_time", "sqlite_busy_errors", "queue_deletion", "hierarchy_integrity", "completion_rate",
        "worker_staggering", "throughput", "no_duplicate_processing", "write_lock_hold", "worker_health",
    ]
    assert [v for v in verdicts if not v.passed] == []


def test_a_transient_failure_is_redelivered_and_completes(tmp_path: Path) -> None:
    # 500ms: long enough that a stalled second delivery on a busy machine is not redelivered a third time
    settings = _settings(workers=2, visibility_timeout="500ms", max_receive=3)
    r = run_scenario(TINY, settings, run_dir=tmp_path, handler=FailFirstDelivery())
    assert r.jobs_completed == 10 and r.jobs_failed == 0
    assert r.redeliveries == 10  # each job's second delivery
    assert sum(w.jobs for w in r.workers) == 20
    assert r.messages_left == 0 and r.dead_messages == 0
    assert r.duplicate_completions == 0
    assert r.integrity["integrity_pct"] == 100.0
    assert r.retry["save_job"]["operations"] == 2 + 20 + 10  # parents, mark_running x20, failures recorded x10
    verdicts = {v.criterion: v for v in evaluate(r, thresholds_for(TINY, RELAXED))}
    assert verdicts["completion_rate"].passed and verdicts["queue_deletion"].passed
    assert verdicts["no_duplicate_processing"].passed and verdicts["hierarchy_integrity"].passed


def test_a_transient_failure_in_process_mode(tmp_path: Path) -> None:
    settings = _settings(workers=2, visibility_timeout="500ms", worker_mode="process")
    r = run_scenario(TINY, settings, run_dir=tmp_path, handler=FailFirstDelivery())
    assert (r.jobs_completed, r.redeliveries, r.messages_left, r.duplicate_completions) == (10, 10, 0, 0)


def test_a_permanent_failure_ends_in_failed_children_and_dead_messages(tmp_path: Path) -> None:
    settings = _settings(workers=2, visibility_timeout="300ms", max_receive=2)
    r = run_scenario(TINY, settings, run_dir=tmp_path, handler=AlwaysFail())
    assert not r.timed_out
    assert r.jobs_completed == 0 and r.jobs_failed == 10
    assert r.dead_messages == 10 and r.messages_left == 10
    assert r.redeliveries == 10
    assert r.duplicate_completions == 0
    i = r.integrity
    assert i["integrity_pct"] == 100.0, i
    rows = _children(r.db_path)
    parents = [row for row in rows if row["job_type"] == "parent"]
    children = [row for row in rows if row["job_type"] == "crawler_url"]
    assert [(p["status"], p["completed_urls"], p["failed_urls"], p["pending_urls"]) for p in parents] == [
        ("completed", 0, 5, 0)] * 2
    assert {(c["status"], c["error"]) for c in children} == {("failed", "RuntimeError: permanent failure")}
    conn = sqlite3.connect(r.db_path)
    try:
        assert conn.execute("select min(received), max(received) from goqite").fetchone() == (2, 2)
    finally:
        conn.close()
    verdicts = {v.criterion: v for v in evaluate(r, thresholds_for(TINY, RELAXED))}
    assert not verdicts["completion_rate"].passed
    assert verdicts["completion_rate"].measured.startswith("0.0% (0/10)")
    assert verdicts["hierarchy_integrity"].passed
    # dead messages are not deletable: none of the deletable ones is left behind
    assert verdicts["queue_deletion"].passed, verdicts["queue_deletion"]


def test_a_database_with_leftover_messages_is_refused(tmp_path: Path) -> None:
    db_path = tmp_path / "kept.db"
    settings = _settings(workers=1, visibility_timeout="300ms", max_receive=1, db_path=str(db_path))
    first = run_scenario(TINY, settings, run_dir=tmp_path / "one", handler=AlwaysFail())
    assert first.dead_messages == 10 and first.db_path == str(db_path.resolve())
    with pytest.raises(RunError, match=r"already holds 10 messages from an earlier run"):
        run_scenario(TINY, settings, run_dir=tmp_path / "two")


def test_a_second_run_on_a_drained_kept_file_is_judged_alone(tmp_path: Path) -> None:
    db_path = tmp_path / "kept.db"
    settings = _settings(workers=2, db_path=str(db_path))
    first = run_scenario(TINY, settings, run_dir=tmp_path / "one")
    second = run_scenario(TINY, settings, run_dir=tmp_path / "two")
    assert first.run_id != second.run_id
    assert second.jobs_completed == 10 and second.children_found == 10
    assert second.integrity["integrity_pct"] == 100.0
    assert len([row for row in _children(str(db_path)) if row["job_type"] == "parent"]) == 4


def test_deadline_stops_a_run_that_cannot_drain(tmp_path: Path) -> None:
    settings = _settings(workers=1, visibility_timeout="5m")
    r = run_scenario(TINY, settings, run_dir=tmp_path, handler=AlwaysFail(), deadline=0.5)
    assert r.timed_out
    assert r.phase_offset("jobs_completed") is not None
    verdict = evaluate(r, thresholds_for(TINY, RELAXED))[0]
    assert verdict.criterion == "execution_time" and not verdict.passed
    assert "deadline" in verdict.detail


@pytest.mark.parametrize(
    ("enqueued", "left", "dead", "rate"),
    [(10, 0, 0, 100.0), (10, 5, 0, 50.0), (10, 10, 10, 100.0), (10, 6, 5, 80.0), (0, 0, 0, 100.0), (10, 10, 0, 0.0)],
)
def test_deletion_rate_leaves_dead_messages_out(enqueued: int, left: int, dead: int, rate: float) -> None:
    r = RunResult(scenario="t", parents=1, children_per_parent=enqueued or 1, run_id="x", settings={},
                  messages_enqueued=enqueued, messages_left=left, dead_messages=dead)
    assert r.deletion_rate == pytest.approx(rate)


class _CountBeforeProducersFinish:
    """Endpoints whose watched queue takes its first count while the producers are held, then
    lets them finish before returning that (empty) count: the moment a run must not read as
    "drained". Producers and workers get plain endpoints, except that children wait for it."""

    watch_queue = True

    def __init__(self) -> None:
        import threading

        self.first_count_taken = threading.Event()
        self.counts_calls = 0

    def __call__(self, db_path: str, settings: Settings) -> Any:
        import threading

        from pytest_quaero.core.worker import open_endpoint

        endpoint = open_endpoint(db_path, settings)
        gate = self
        if threading.current_thread() is threading.main_thread():  # the run's watched endpoint
            real_counts = endpoint.queue.counts

            def counts() -> Any:
                gate.counts_calls += 1
                taken = real_counts()
                if gate.counts_calls == 1:
                    gate.first_count_taken.set()
                    while any(t.name.startswith("quaero-producer") for t in threading.enumerate()):
                        threading.Event().wait(0.005)
                return taken

            endpoint.queue.counts = counts
        else:
            real_create = endpoint.store.create_child

            def create_child(*args: Any, **kwargs: Any) -> None:
                assert gate.first_count_taken.wait(10)
                real_create(*args, **kwargs)

            endpoint.store.create_child = create_child
        return endpoint


def test_a_producer_finishing_during_a_count_is_not_a_drained_queue(tmp_path: Path) -> None:
    """Regression: the monitor counted, then asked whether producers were done; a producer
    finishing in between made an empty count look like a drained queue, and the run ended
    with every job still queued (seen on a shared database under xdist)."""
    settings = Settings().replace(source="test", workers=2, stagger="50ms", job_time="1ms", poll_interval="20ms")
    factory = _CountBeforeProducersFinish()
    result = run_scenario(Scenario("race", 2, 5, 30.0), settings, run_dir=tmp_path, endpoint_factory=factory,
                          deadline=20.0, sample_interval=0.05)
    assert factory.counts_calls >= 2
    assert (result.jobs_completed, result.messages_left) == (10, 0)
