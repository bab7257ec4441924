"""What observing every connection costs: throughput with and without the instruments, side by side.

Runs light, medium and heavy with the template's settings (thread workers, so both sides
run in this one process) and zero simulated work (so the database path, where the
instruments sit, is all there is to measure), alternating observed and plain runs
(``pytest_quaero.core.db.CONNECTION_FACTORY`` swapped for ``sqlite3.Connection``) so the
machine's drift hits both sides alike. Prints the median jobs/s of each side and their ratio
(target >= 0.95), plus the observed runs' write-lock figures.

    python benchmarks/bench_instruments.py            # 5 pairs per scenario
    python benchmarks/bench_instruments.py --quick    # 2 pairs per scenario
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_line

from pytest_quaero.core import db
from pytest_quaero.core.observed import ObservedConnection
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.settings import Settings

SETTINGS = Settings().replace(source="bench_instruments", job_time="0ms", stagger="0ms", poll_interval="10ms")


def one_run(scenario: str, observed: bool) -> tuple[float, dict[str, object]]:
    db.CONNECTION_FACTORY = ObservedConnection if observed else sqlite3.Connection
    try:
        with tempfile.TemporaryDirectory(prefix="bench-instruments-") as run_dir:
            result = run_scenario(BUILTIN[scenario], SETTINGS, run_dir=run_dir)
    finally:
        db.CONNECTION_FACTORY = ObservedConnection
    return result.throughput, result.extra.get("locks", {})


def main() -> None:
    pairs = 2 if "--quick" in sys.argv else 5
    print(f"bench_instruments: {pairs} alternating pairs per scenario; {machine_line()}")
    print()
    print("| scenario | plain jobs/s | observed jobs/s | ratio | hold p95 / max (ms) | writer wait p95 / max (ms) |")
    print("|---|---:|---:|---:|---|---|")
    for scenario in ("light", "medium", "heavy"):
        plain: list[float] = []
        observed: list[float] = []
        locks: dict[str, object] = {}
        for pair in range(pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            for is_observed in order:
                rate, measured = one_run(scenario, is_observed)
                (observed if is_observed else plain).append(rate)
                if is_observed:
                    locks = measured
        total = locks.get("total", {})
        hold = total.get("hold_ms", {}) if isinstance(total, dict) else {}
        wait = total.get("wait_ms", {}) if isinstance(total, dict) else {}
        p, o = statistics.median(plain), statistics.median(observed)
        print(f"| {scenario} | {p:.1f} | {o:.1f} | {o / p:.3f} | {hold.get('p95')} / {hold.get('max')} | "
              f"{wait.get('p95')} / {wait.get('max')} |")


if __name__ == "__main__":
    main()
