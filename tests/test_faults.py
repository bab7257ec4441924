"""Faults: a worker killed mid-job, a producer killed mid-parent, a pool restart; nothing lost, nothing twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gallery.pools import endpoint_with
from gallery.queues import DeleteOnReceiveQueue

from pytest_quaero.core.criteria import Thresholds, evaluate
from pytest_quaero.core.fault_spec import FaultError, check_faults, parse_faults
from pytest_quaero.core.faults import FaultPlan
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.worker import open_endpoint

SCENARIO = Scenario("tiny", 3, 20, 30.0)
FAST = Settings().replace(job_time="2ms", stagger="20ms", poll_interval="10ms", visibility_timeout="500ms", workers=2)


def run_with_faults(
    tmp_path: Path, spec: str, settings: Settings = FAST, endpoint_factory: Any = open_endpoint
) -> RunResult:
    plan = FaultPlan.from_spec(spec, total_jobs=SCENARIO.total_jobs, children=SCENARIO.children)
    result = run_scenario(
        SCENARIO, settings, run_dir=tmp_path, deadline=20.0, sample_interval=0.05, disturbances=[plan],
        handler=plan.handler(None, settings), endpoint_factory=plan.endpoint_factory(endpoint_factory),
        pool_factory=plan.pool_factory(),
    )
    result.verdicts = [v.as_dict() for v in evaluate(result, Thresholds(max_execution_time=20.0))]
    result.verdicts.append(result.extra["faults"]["verdict"])
    return result


def injected(result: RunResult, kind: str) -> dict[str, Any]:
    return next(entry for entry in result.extra["faults"]["injected"] if entry["fault"] == kind)


def test_spec_syntax() -> None:
    faults = parse_faults("kill-worker;kill-producer:parent=2,after=5;restart-pool:at=1s")
    assert [f.kind for f in faults] == ["kill-worker", "kill-producer", "restart-pool"]
    assert faults[0].params["after"] == (25.0, True) and faults[0].after_jobs(100) == 25
    assert faults[1].params == {"parent": 2, "after": (5.0, False)}
    assert faults[2].params["at"] == 1.0 and faults[2].params["after"] is None


@pytest.mark.parametrize("spec, said", [
    ("kill-db", "unknown fault 'kill-db'; allowed: kill-worker, kill-producer, restart-pool"),
    ("kill-worker:when=1s", "unknown setting 'when=1s' for kill-worker; allowed: after, at, hold"),
    ("kill-worker:after=lots", "invalid after='lots'; allowed: a number of jobs (10) or a percentage (25%)"),
    ("restart-pool:after=5,at=1s", "give after= or at=, not both"),
    ("kill-producer:parent=0", "invalid parent='0'"),
])
def test_bad_specs_name_the_option(spec: str, said: str) -> None:
    with pytest.raises(FaultError) as info:
        parse_faults(spec)
    assert str(info.value).startswith("--quaero-faults=") and said in str(info.value)


def test_a_kill_needs_a_survivor_and_a_short_visibility_timeout() -> None:
    with pytest.raises(FaultError, match="needs at least 2 workers"):
        check_faults(parse_faults("kill-worker"), Settings().replace(workers=1))
    warnings = check_faults(parse_faults("kill-worker"), Settings())
    assert warnings and "visibility timeout (5m)" in warnings[0]


def test_thread_mode_survives_every_fault(tmp_path: Path) -> None:
    result = run_with_faults(tmp_path, "kill-worker:after=10;kill-producer:parent=2,after=5;restart-pool:after=50%")
    assert result.extra["faults"]["missed"] == []
    assert [v["criterion"] for v in result.verdicts if not v["passed"]] == [], result.verdicts
    worker = injected(result, "kill-worker")
    assert worker["signal"].startswith("WorkerKilled") and worker["redelivered"] and worker["completed"]
    assert worker["jobs_done"] >= 10
    producer = injected(result, "kill-producer")
    assert producer["children_committed"] == 5 and producer["children_survived"] == 5
    assert producer["killed_child_rolled_back"] is True
    assert producer["children_committed"] + producer["children_resumed"] == SCENARIO.children
    assert injected(result, "restart-pool")["jobs_done"] >= 30
    assert result.messages_enqueued == SCENARIO.total_jobs and result.duplicate_completions == 0
    labels = [entry["label"] for entry in result.timeline]
    assert sum(label.startswith("Fault injected") for label in labels) == 3


def test_process_mode_kill_is_a_real_sigkill_and_the_job_comes_back(tmp_path: Path) -> None:
    result = run_with_faults(tmp_path, "kill-worker:after=10;restart-pool:after=40",
                             FAST.replace(worker_mode="process"))
    worker = injected(result, "kill-worker")
    assert worker["signal"] == "SIGKILL" and worker["mode"] == "process"
    assert worker["redelivered"] and worker["completed"]
    restart = injected(result, "restart-pool")
    assert restart["old_pids"] and restart["new_pids"] and not set(restart["old_pids"]) & set(restart["new_pids"])
    assert result.extra["faults"]["verdict"]["passed"], result.extra["faults"]["verdict"]


def test_a_queue_that_deletes_on_receive_loses_the_killed_job(tmp_path: Path) -> None:
    # The fault's own verdict can fail: with at-most-once delivery the killed job never comes back.
    result = run_with_faults(tmp_path, "kill-worker:after=10", endpoint_factory=endpoint_with(DeleteOnReceiveQueue))
    verdict = result.extra["faults"]["verdict"]
    assert not verdict["passed"]
    assert "1 jobs not completed" in verdict["detail"]
    worker = injected(result, "kill-worker")
    assert worker["completed"] is False and worker["redelivered"] is False
    assert result.extra["keep_files"] is True


def test_a_fault_that_never_fires_fails_the_recovery_verdict(tmp_path: Path) -> None:
    result = run_with_faults(tmp_path, "restart-pool:at=60s")
    assert result.extra["faults"]["missed"][0]["reason"] == "the run ended before the trigger was reached"
    assert not result.extra["faults"]["verdict"]["passed"]
