"""The narrow-race gallery under exploration: each race found and replayed exactly; the correct code passes.

Each broken side (:mod:`gallery.narrow`) runs under explored schedules of the ``explore``
scenario through the real run (queue, store, handler, criteria); the first failing
schedule's token must replay the identical trace hash and the same failed criterion.
Fresh seeds each time: the test passes only if a race is found reliably, not once.
The default suite runs one exploration per race with random schedules and a short
correct-side exploration; ``-m slow`` runs every strategy three times with ten replays
each, and 2,000 schedules of the correct built-in queue and store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gallery.narrow import EXPLORE, NARROW, LockedClaimQueue
from gallery.pools import endpoint_with

from pytest_quaero.core.criteria import Thresholds, Verdict, evaluate
from pytest_quaero.core.explore.runner import Exploration, explore
from pytest_quaero.core.explore.scheduler import ExplorationError
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.pool import open_endpoint
from pytest_quaero.core.settings import Settings

#: the issue's bar: each race found within this many schedules, every time
WITHIN = 200
cases = pytest.mark.parametrize("case", NARROW, ids=[case.key for case in NARROW])


def judge(result: RunResult) -> list[Verdict]:
    return evaluate(result, Thresholds(max_execution_time=EXPLORE.time_limit))


def run(tmp_path: Path, endpoint_factory: Any, **options: Any) -> Exploration:
    return explore(EXPLORE, Settings(), run_dir=tmp_path, judge=judge, endpoint_factory=endpoint_factory, **options)


def found_and_replayed(tmp_path: Path, case: Any, spec: str, replays: int) -> int:
    """Explore ``case``'s broken side; assert a race was found and replays exactly; schedules it took."""
    exploration = run(tmp_path / "explore", case.broken(), spec=spec)
    failing = exploration.failing
    assert failing is not None, f"{case.key}: no failure in {spec}"
    assert case.criterion in failing.failed, failing
    assert exploration.result is not None
    message = next(v["detail"] for v in exploration.result.verdicts if v["criterion"] == case.criterion)
    assert f"--quaero-replay={failing.token} (trace hash {failing.trace_hash})" in message
    assert failing.tail[-1].strip() in message  # the trace's last steps are in the failure text
    assert exploration.result.extra["exploration"]["failing"]["token"] == failing.token  # and in the JSON
    for attempt in range(replays):
        again = run(tmp_path / f"replay-{attempt}", case.broken(), replay=failing.token)
        assert [(s.trace_hash, s.failed) for s in again.schedules] == [(failing.trace_hash, failing.failed)]
    return failing.number


@cases
def test_each_narrow_race_is_found_and_its_token_replays_the_identical_trace(tmp_path: Path, case: Any) -> None:
    found_and_replayed(tmp_path, case, f"random:{WITHIN}", replays=2)


@pytest.mark.slow
@cases
@pytest.mark.parametrize("strategy", ["random", "pct", "systematic"])
def test_each_race_found_three_runs_in_three_and_replayed_ten_in_ten(tmp_path: Path, case: Any,
                                                                     strategy: str) -> None:
    taken = [found_and_replayed(tmp_path / f"run-{n}", case, f"{strategy}:{WITHIN}", replays=10) for n in range(3)]
    print(f"{case.key} {strategy}: schedules to the first failure {taken}")


@cases
def test_the_correct_twin_passes_explored_schedules(tmp_path: Path, case: Any) -> None:
    exploration = run(tmp_path, case.correct(), spec="random:8")
    assert exploration.failing is None
    assert len(exploration.schedules) == 8
    assert len({s.trace_hash for s in exploration.schedules}) > 4  # different schedules, not one 8 times


@pytest.mark.slow
def test_the_correct_builtin_queue_and_store_pass_2000_schedules(tmp_path: Path) -> None:
    ran = 0
    # the systematic search with two forced switches: every such schedule, or the first 300
    for spec in ("random:1000", "pct:1000:3", "systematic:300:2"):
        exploration = run(tmp_path / spec.replace(":", "-"), open_endpoint, spec=spec)
        assert exploration.failing is None, exploration.failing
        ran += len(exploration.schedules)
    assert ran >= 2000


def test_a_python_lock_around_the_claim_is_named_by_the_watchdog(tmp_path: Path) -> None:
    with pytest.raises(ExplorationError) as caught:
        run(tmp_path, endpoint_with(LockedClaimQueue), spec="random:50", watchdog=0.5)
    message = str(caught.value)
    assert "reached no scheduling point" in message and "worker-" in message
    assert "in receive" in message and "with self.claim_lock:" in message  # where it waits
