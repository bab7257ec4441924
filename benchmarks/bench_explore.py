"""What exploring costs, and what it finds that free-running load runs do not.

Part 1, cost, side by side in one run (free and explored alternate, so the machine's drift hits both):

* statements: three threads each run the same autocommit INSERTs, free-running and under
  a random schedule (one token, a scheduling point at each statement): µs per statement;
* schedules: the ``explore`` scenario (2 workers, 1 parent x 4 children, built-in queue) run
  free and explored: runs (schedules) per second, statements per run, and what a scheduling
  point costs over the free run's statement.

Part 2, per narrow race class (tests/gallery/narrow.py): schedules to the first failure under
each strategy (fresh seeds, three explorations each) against free-running runs to the first
failure of the same class (the ``explore`` shape free, and the template's ``light`` run:
2 workers, 500ms stagger, 1s polls: how many of 5 catch it), each counted only on that class's criterion.

    python benchmarks/bench_explore.py            # 3 explorations / 20 free runs per class
    python benchmarks/bench_explore.py --quick    # 1 exploration / 5 free runs per class
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import machine_line
from gallery.narrow import EXPLORE, NARROW

from pytest_quaero.core import observed
from pytest_quaero.core.criteria import Thresholds, evaluate
from pytest_quaero.core.explore.runner import explore
from pytest_quaero.core.explore.scheduler import Scheduler
from pytest_quaero.core.explore.strategies import RandomStrategy, Strategy, SystematicStrategy
from pytest_quaero.core.observed import observing
from pytest_quaero.core.pool import open_endpoint
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.settings import Settings

THREADS, INSERTS = 3, 400


def judge(result: Any) -> Any:
    return evaluate(result, Thresholds(max_execution_time=EXPLORE.time_limit))


def statements(strategy: Strategy | None) -> float:
    """µs per INSERT, three threads on one file, free (None) or under one schedule of ``strategy``."""
    with tempfile.TemporaryDirectory(prefix="bench-explore-") as where:
        path = str(Path(where) / "s.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma synchronous=normal")
        conn.execute("create table t (who text, i int)")
        conn.close()

        def body(name: str) -> None:
            mine = sqlite3.connect(path, isolation_level=None, timeout=10)
            mine.execute("pragma synchronous=normal")
            for i in range(INSERTS):
                mine.execute("insert into t values (?, ?)", (name, i))
            mine.close()

        names = [f"s{n}" for n in range(THREADS)]
        scheduler = Scheduler(strategy, names) if strategy is not None else None
        with observing():
            observed.SCHEDULER = scheduler
            try:
                started = time.perf_counter()
                threads = [threading.Thread(target=body, args=(name,), name=name) for name in names]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                elapsed = time.perf_counter() - started
            finally:
                if scheduler is not None:
                    scheduler.release()
                observed.SCHEDULER = None
        return elapsed / (THREADS * INSERTS) * 1e6


def free_runs(count: int) -> tuple[float, float]:
    """(runs per second, statements per run) of the explore scenario free-running."""
    seconds, counted = 0.0, 0
    for _ in range(count):
        with tempfile.TemporaryDirectory(prefix="bench-explore-") as where:
            began = time.perf_counter()
            result = run_scenario(EXPLORE, Settings(), run_dir=where)
            seconds += time.perf_counter() - began
            ops = result.extra.get("locks", {}).get("operations", {})
            counted += sum(sum(data.get("statements", {}).values()) for op, data in ops.items() if op != "harness")
    return count / seconds, counted / count


def explored_runs(count: int) -> tuple[float, float]:
    """(schedules per second, statements per schedule) of the explore scenario explored at random."""
    with tempfile.TemporaryDirectory(prefix="bench-explore-") as where:
        exploration = explore(EXPLORE, Settings(), run_dir=where, judge=judge, spec=f"random:{count}",
                              endpoint_factory=open_endpoint)
    assert exploration.failing is None
    return len(exploration.schedules) / exploration.seconds, statistics.mean(
        s.statements for s in exploration.schedules)


def cost(rounds: int) -> None:
    free_stmt, explored_stmt, unswitched_stmt, free_rate, explored_rate = [], [], [], [], []
    free_count = explored_count = 0.0
    for _ in range(rounds):
        free_stmt.append(statements(None))
        explored_stmt.append(statements(RandomStrategy(1)))
        unswitched_stmt.append(statements(SystematicStrategy()))
        rate, free_count = free_runs(10)
        free_rate.append(rate)
        rate, explored_count = explored_runs(10)
        explored_rate.append(rate)
    fs, es, us = statistics.median(free_stmt), statistics.median(explored_stmt), statistics.median(unswitched_stmt)
    fr, er = statistics.median(free_rate), statistics.median(explored_rate)
    print("| figure | free-running | explored | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| µs per INSERT, {THREADS} threads x {INSERTS}, random (a switch at ~2 in 3) | {fs:.1f} | {es:.1f} | "
          f"{es / fs:.2f} |")
    print(f"| µs per INSERT, {THREADS} threads x {INSERTS}, sys.0 (no switch but at a thread's end) | {fs:.1f} | "
          f"{us:.1f} | {us / fs:.2f} |")
    print(f"| explore scenario: runs (schedules) per second | {fr:.1f} | {er:.1f} | {er / fr:.2f} |")
    print(f"| statements per run (workers, producers) | {free_count:.0f} | {explored_count:.0f} | |")
    print(f"\nscheduling point: {us - fs:.1f} µs over a free statement without a switch, {es - fs:.1f} µs at random "
          f"({rounds} rounds, medians)\n", flush=True)


def free_to_first_failure(case: Any, scenario: Any, settings: Settings, cap: int) -> str:
    for number in range(1, cap + 1):
        with tempfile.TemporaryDirectory(prefix="bench-explore-") as where:
            result = run_scenario(scenario, settings, run_dir=where, endpoint_factory=case.broken())
        if any(v.criterion == case.criterion and not v.passed for v in evaluate(result, Thresholds())):
            return str(number)
    return f"not in {cap}"


def caught_in(case: Any, scenario: Any, settings: Settings, runs: int) -> str:
    """``k/runs``: how many free runs fail that class's criterion."""
    caught = 0
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-explore-") as where:
            result = run_scenario(scenario, settings, run_dir=where, endpoint_factory=case.broken())
        caught += any(v.criterion == case.criterion and not v.passed for v in evaluate(result, Thresholds()))
    return f"{caught}/{runs}"


def explored_to_first_failure(case: Any, strategy: str) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-explore-") as where:
        exploration = explore(EXPLORE, Settings(), run_dir=where, judge=judge, spec=f"{strategy}:200",
                              endpoint_factory=case.broken())
    failing = exploration.failing
    return str(failing.number) if failing is not None and case.criterion in failing.failed else "not in 200"


def finds(explorations: int, cap: int) -> None:
    print("| race class | random | pct:3 | systematic:1 | free, explore shape | light (template): caught in |")
    print("|---|---|---|---|---|---|")
    light = Settings()
    for case in NARROW:
        cells = [", ".join(explored_to_first_failure(case, strategy) for _ in range(explorations))
                 for strategy in ("random", "pct", "systematic")]
        cells.append(", ".join(free_to_first_failure(case, EXPLORE, Settings(), cap) for _ in range(explorations)))
        cells.append(caught_in(case, BUILTIN["light"], light, 5))
        print(f"| {case.key} | " + " | ".join(cells) + " |", flush=True)
    print("\nschedules (free runs) to the first failure of that class's criterion, explorations from fresh seeds; "
          "the last column: free light runs (2 workers, 500ms stagger, 1s polls) out of 5 that failed it")


def main() -> None:
    quick = "--quick" in sys.argv
    print(f"bench_explore; {machine_line()}\n")
    cost(1 if quick else 3)
    finds(1 if quick else 3, 5 if quick else 20)


if __name__ == "__main__":
    main()
