"""What observing every connection costs: throughput with and without the instruments, side by side.

Runs light, medium and heavy twice over: with the template's settings (what a team runs; target
>= 0.95 of plain throughput) and with zero simulated work, no stagger and a 10ms poll (the
database path, where the instruments sit, is all there is: the worst case). Thread workers,
so both sides run in this one process, alternating observed and plain runs so the machine's
drift hits both alike. The plain side opens ``sqlite3.Connection`` objects
(``pytest_quaero.core.db.CONNECTION_FACTORY``) and leaves ``sqlite3.connect`` alone
(``pytest_quaero.core.observed.PATCH_CONNECT``): no statement timing, no ledger triggers.
Prints the median jobs/s of each side and their ratio, plus the observed runs' write-lock figures.

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
from pytest_quaero.core import observed as observed_module
from pytest_quaero.core.observed import ObservedConnection
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.settings import Settings

LOADS = {
    "template settings": Settings().replace(source="bench_instruments"),
    "zero work (worst case)": Settings().replace(source="bench_instruments", job_time="0ms", stagger="0ms",
                                                 poll_interval="10ms"),
}


def one_run(scenario: str, settings: Settings, observed: bool) -> tuple[float, dict[str, object]]:
    db.CONNECTION_FACTORY = ObservedConnection if observed else sqlite3.Connection
    observed_module.PATCH_CONNECT = observed
    try:
        with tempfile.TemporaryDirectory(prefix="bench-instruments-") as run_dir:
            result = run_scenario(BUILTIN[scenario], settings, run_dir=run_dir)
    finally:
        db.CONNECTION_FACTORY = ObservedConnection
        observed_module.PATCH_CONNECT = True
    return result.throughput, result.extra.get("locks", {})


def main() -> None:
    pairs = 2 if "--quick" in sys.argv else 5
    print(f"bench_instruments: {pairs} alternating pairs per scenario; {machine_line()}")
    print()
    print("| load | scenario | plain jobs/s | observed jobs/s | ratio | hold p95 / max (ms) | wait p95 / max (ms) |")
    print("|---|---|---:|---:|---:|---|---|")
    for load, settings in LOADS.items():
        for scenario in ("light", "medium", "heavy"):
            row(load, scenario, settings, pairs)


def row(load: str, scenario: str, settings: Settings, pairs: int) -> None:
    plain: list[float] = []
    observed: list[float] = []
    locks: dict[str, object] = {}
    for pair in range(pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        for is_observed in order:
            rate, measured = one_run(scenario, settings, is_observed)
            (observed if is_observed else plain).append(rate)
            if is_observed:
                locks = measured
    total = locks.get("total", {})
    hold = total.get("hold_ms", {}) if isinstance(total, dict) else {}
    wait = total.get("wait_ms", {}) if isinstance(total, dict) else {}
    p, o = statistics.median(plain), statistics.median(observed)
    print(f"| {load} | {scenario} | {p:.1f} | {o:.1f} | {o / p:.3f} | {hold.get('p95')} / {hold.get('max')} | "
          f"{wait.get('p95')} / {wait.get('max')} |", flush=True)


if __name__ == "__main__":
    main()
