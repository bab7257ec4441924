"""Does the default gate catch each lock bug a team could ship, every time, without flagging correct code?

Runs the user-level gallery (``tests/lock_gallery/variants.py``): each broken variant's
``conftest.py`` in a fresh temporary project, through ``python -m pytest
--quaero-scenario=light|stress`` with the template's default settings, as the team's CI
would; each broken variant ``--broken-runs`` times (every run must fail its criteria),
the correct built-in queue ``--correct-runs`` times on light and on stress (every run must
pass all criteria), and the hook-based correct twins ``--twin-runs`` times. Runs are
interleaved (one round of every variant, then the next) so a noisy neighbour hits all of
them alike. Prints a Markdown table; exit 1 when a broken run got through or a correct run
failed.

    python benchmarks/bench_detection.py            # 3 x 9 broken, 20 + 20 correct, 3 x 1 twin (~4 min)
    python benchmarks/bench_detection.py --quick    # 1 x broken, 3 + 3 correct, 1 twin (~40 s)
    python benchmarks/bench_detection.py --only 6,7a --broken-runs 10
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import Bench, machine_line, med, print_table
from lock_gallery.variants import BROKEN, CORRECT, Variant, item_outcomes, run_args

#: a run that takes longer than this is a hang, reported as such (light takes ~2 s, stress ~1-3 s)
RUN_TIMEOUT = 300.0


@dataclass
class Tally:
    """What the runs of one variant did."""

    variant: Variant
    runs: int = 0
    #: broken: runs in which every expected criterion failed; correct: runs in which everything passed
    good: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    hold_p95: list[float] = field(default_factory=list)
    hold_max: list[float] = field(default_factory=list)
    wait_p95: list[float] = field(default_factory=list)
    wait_max: list[float] = field(default_factory=list)


def one_run(variant: Variant, directory: Path, env: dict[str, str]) -> tuple[dict[str, str], dict[str, Any], str]:
    """Run the variant once in its own project: (criterion -> outcome, the run's JSON result, problem)."""
    directory.mkdir(parents=True)
    (directory / "conftest.py").write_text(variant.conftest, encoding="utf-8")
    (directory / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # this project's rootdir, no other ini
    junit, results = directory / "junit.xml", directory / "results.json"
    command = [sys.executable, "-m", "pytest", "-q", *run_args(variant, junit, results)]
    try:
        done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        return {}, {}, f"hung for {RUN_TIMEOUT:.0f}s"
    if not junit.exists():
        said = " ".join((done.stderr or done.stdout).split())
        return {}, {}, f"exit {done.returncode}, no JUnit file: {said[:160]}"
    prefix = f"quaero[{variant.scenario}]::"
    outcomes = {name.removeprefix(prefix): outcome for name, (outcome, _) in item_outcomes(junit).items()}
    result: dict[str, Any] = {}
    if results.exists():
        document = json.loads(results.read_text(encoding="utf-8"))
        result = document["results"][0] if document.get("results") else {}
    expected_exit = 1 if variant.broken else 0
    problem = "" if done.returncode == expected_exit else f"exit {done.returncode}"
    return outcomes, result, problem


def record(tally: Tally, outcomes: dict[str, str], result: dict[str, Any], problem: str, seconds: float) -> None:
    tally.runs += 1
    tally.seconds.append(seconds)
    failed = sorted(key for key, outcome in outcomes.items() if outcome != "passed")
    tally.failed.update(failed)
    variant = tally.variant
    if variant.broken:
        ok = bool(outcomes) and all(outcomes.get(key) == "failed" for key in variant.expected)
    else:
        ok = bool(outcomes) and not failed
    tally.good += ok and not problem
    if problem:
        tally.notes.append(problem)
    total = result.get("extra", {}).get("locks", {}).get("total", {})
    if total:
        tally.hold_p95.append(float(total["hold_ms"]["p95"]))
        tally.hold_max.append(float(total["hold_ms"]["max"]))
        tally.wait_p95.append(float(total["wait_ms"]["p95"]))
        tally.wait_max.append(float(total["wait_ms"]["max"]))


def _ms(values: list[float]) -> str:
    return f"{med(values):.2f} / {max(values):.2f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    bench = Bench(__doc__.splitlines()[0], reps=3, quick_reps=1)
    bench.parser.add_argument("--broken-runs", type=int, default=None, help="runs per broken variant (3; --quick 1)")
    bench.parser.add_argument("--correct-runs", type=int, default=None,
                              help="runs of the built-in queue per scenario (20; --quick 3)")
    bench.parser.add_argument("--twin-runs", type=int, default=None, help="runs per hook-based twin (3; --quick 1)")
    bench.parser.add_argument("--only", default="", help="comma list of variant keys (e.g. 1,7a,ok-light)")
    args = bench.parse(argv)
    assert bench.dir is not None
    broken_runs = args.broken_runs if args.broken_runs is not None else args.reps
    correct_runs = args.correct_runs if args.correct_runs is not None else (3 if args.quick else 20)
    twin_runs = args.twin_runs if args.twin_runs is not None else (1 if args.quick else 3)
    only = {key.strip() for key in args.only.split(",") if key.strip()}
    plan: list[tuple[Variant, int]] = [(v, broken_runs) for v in BROKEN]
    plan += [(v, correct_runs if v.builtin else twin_runs) for v in CORRECT]
    plan = [(v, n) for v, n in plan if n > 0 and (not only or v.key in only)]
    # the template's defaults, whatever this shell exports
    env = {name: value for name, value in os.environ.items() if not name.startswith("QUAERO_")}
    env.pop("PYTEST_ADDOPTS", None)
    tallies = {variant.key: Tally(variant) for variant, _ in plan}
    print(f"bench_detection: {machine_line()}", flush=True)
    started = time.monotonic()
    try:
        for round_number in range(max((n for _, n in plan), default=0)):
            for variant, runs in plan:
                if round_number >= runs:
                    continue
                began = time.monotonic()
                outcomes, result, problem = one_run(variant, bench.dir / f"{variant.key}-{round_number + 1}", env)
                record(tallies[variant.key], outcomes, result, problem, time.monotonic() - began)
                mark = "." if outcomes and not problem else "!"
                print(mark, end="", flush=True)
    finally:
        bench.cleanup()
    print(f"\n{sum(t.runs for t in tallies.values())} runs in {time.monotonic() - started:.0f}s\n")
    rows = []
    for tally in tallies.values():
        variant = tally.variant
        required = ", ".join(variant.expected) or "none (all pass)"
        verdict = f"{tally.good}/{tally.runs} {'caught' if variant.broken else 'passed'}"
        also = ", ".join(f"{key} ({n}/{tally.runs})" for key, n in sorted(tally.failed.items())
                         if key not in variant.expected) or "none"
        if tally.notes:
            also += "; " + ", ".join(f"{note} x{n}" for note, n in Counter(tally.notes).items())
        rows.append([variant.key, variant.name, variant.scenario + "".join(f" {a}" for a in variant.args), required,
                     verdict, also, _ms(tally.hold_p95), _ms(tally.hold_max), _ms(tally.wait_p95), _ms(tally.wait_max),
                     f"{med(tally.seconds):.1f}"])
    # lock figures: median / worst over the runs of each run's own p95 or max, in ms
    print_table(["class", "variant", "scenario", "criterion that must fail", "runs", "also failed",
                 "hold p95 ms", "hold max ms", "wait p95 ms", "wait max ms", "s/run"], rows)
    missed = [t.variant.key for t in tallies.values() if t.good < t.runs]
    if missed:
        print(f"\nNOT AS EXPECTED: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
