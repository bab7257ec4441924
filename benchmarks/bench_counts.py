"""The counted gate never flakes, and catches one more statement or connection per job.

Records one light run as the baseline, then runs light 20 times back to back, every other run
with both cores kept busy by two spinning processes, and compares each with the baseline the
way ``--quaero-baseline`` does with no rule given (every count per job exact). Then runs two
queue variants (one extra SELECT per job; one extra connection per job) 3 times each under the
same comparison. Prints a table per run: load, throughput, the counts, the verdict; and the
throughput spread of the 20 correct runs next to each variant's throughput difference, to show
that a timing gate could not tell them apart.

    python benchmarks/bench_counts.py            # 20 correct runs, 3 per variant
    python benchmarks/bench_counts.py --quick    # 6 correct runs, 1 per variant
"""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line

from pytest_quaero.core import db
from pytest_quaero.core.comparison import compare, parse_rules
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import JobStore
from pytest_quaero.core.worker import Endpoint, open_endpoint

SETTINGS = Settings().replace(source="bench_counts")
SPIN = "while True: pass"


class PeekingQueue(Queue):
    """One extra SELECT per job: the queue's depth, read before each claim."""

    def receive(self) -> Any:
        self.conn.execute("select count(*) from goqite where queue = ?", (self.name,)).fetchone()
        return super().receive()


class FreshConnectionAck(Queue):
    """One extra connection per job: each ack on a connection of its own."""

    db_path = ""

    def delete(self, message_id: str) -> bool:
        conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        try:
            return conn.execute("delete from goqite where queue = ? and id = ?", (self.name, message_id)).rowcount == 1
        finally:
            conn.close()


def endpoint_with(queue_class: type[Queue]) -> Callable[[str, Settings], Endpoint]:
    def factory(db_path: str, settings: Settings) -> Endpoint:
        conn = db.connect(db_path, settings)
        queue = queue_class(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                            max_receive=settings.max_receive)
        queue.db_path = db_path  # type: ignore[attr-defined]
        return Endpoint(queue=queue, store=JobStore(conn), close=conn.close)

    return factory


def one_run(endpoint_factory: Callable[[str, Settings], Endpoint] = open_endpoint) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="bench-counts-") as run_dir:
        return run_scenario(BUILTIN["light"], SETTINGS, run_dir=run_dir, endpoint_factory=endpoint_factory)


def judged(base: RunResult, result: RunResult) -> tuple[str, str]:
    comparison = compare(base, result, [])
    return ("FAIL" if comparison.regressed else "pass"), comparison.summary()


#: a timing rule a team might write, judged bare and against the runs' own noise
TIME_RULE = "throughput:5%"


def time_gate(base: RunResult, result: RunResult) -> tuple[str, str, str]:
    """``(bare verdict, noise-aware verdict, noise band)`` of TIME_RULE for this run against the baseline."""
    rule = parse_rules(TIME_RULE)[0]
    bare = "pass" if rule.passes(base.throughput, result.throughput) else "FAIL"
    row = next(row for row in compare(base, result, [rule]).rows if row.metric == "throughput")
    return bare, "pass" if row.passed else "FAIL", row.noise or "-"


def counts_line(result: RunResult) -> str:
    per_job = result.extra["counts"]["per_job"]
    return (f"{per_job['statements']:.4g} / {per_job['write_transactions']:.4g} / {per_job['rows_changed']:.4g} / "
            f"{result.extra['counts']['total']['connections']}")


def main() -> None:
    quick = "--quick" in sys.argv
    correct_runs, variant_runs = (6, 1) if quick else (20, 3)
    print(f"bench_counts: light, {correct_runs} correct runs (every other with both cores busy), "
          f"{variant_runs} per variant; {machine_line()}")
    base = one_run()
    print(f"baseline: {base.throughput:.1f} jobs/s; statements / write transactions / rows changed per job / "
          f"connections: {counts_line(base)}")
    print()
    print("| run | load | jobs/s | stmts / write tx / rows per job / connections | counted gate | "
          f"{TIME_RULE}: bare / noise-aware (noise band) |")
    print("|---|---|---:|---|---|---|")
    rates: list[float] = []
    identical = false_alarms = bare_alarms = aware_alarms = 0
    for run in range(1, correct_runs + 1):
        busy = run % 2 == 0
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)] if busy else []
        try:
            result = one_run()
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()
        verdict, _ = judged(base, result)
        rates.append(result.throughput)
        identical += result.extra["counts"]["per_job"] == base.extra["counts"]["per_job"]
        false_alarms += verdict == "FAIL"
        bare, aware, band = time_gate(base, result)
        bare_alarms += bare == "FAIL"
        aware_alarms += aware == "FAIL"
        print(f"| {run} | {'both cores busy' if busy else 'idle'} | {result.throughput:.1f} | {counts_line(result)} | "
              f"{verdict} | {bare} / {aware} ({band}) |", flush=True)
    spread = (max(rates) - min(rates)) / statistics.median(rates) * 100
    print()
    print(f"correct queue: {false_alarms} false alarms in {correct_runs} runs; counts identical to the baseline in "
          f"{identical}/{correct_runs}; throughput {min(rates):.1f}-{max(rates):.1f} jobs/s "
          f"(spread {spread:.0f}% of the median); the timing rule {TIME_RULE} alone: {bare_alarms} false alarms, "
          f"noise-aware: {aware_alarms}")
    print()
    print("| variant | run | jobs/s | vs median correct | counted gate |")
    print("|---|---|---:|---:|---|")
    median = statistics.median(rates)
    for name, queue_class in (("one extra SELECT per job", PeekingQueue),
                              ("one extra connection per job", FreshConnectionAck)):
        for run in range(1, variant_runs + 1):
            result = one_run(endpoint_with(queue_class))
            verdict, summary = judged(base, result)
            print(f"| {name} | {run} | {result.throughput:.1f} | {(result.throughput / median - 1) * 100:+.1f}% | "
                  f"{verdict}: {summary} |", flush=True)


if __name__ == "__main__":
    main()
