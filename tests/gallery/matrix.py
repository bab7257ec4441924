"""Run the gallery and print the detection matrix (Markdown) the README shows.

    python tests/gallery/matrix.py [--broken-runs 3] [--correct-runs 10] [--case KEY ...]

Exit code 0 when every broken part failed its criteria on every run and every correct
part passed every criterion on every run; 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``gallery`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gallery.cases import CASES, failed_criteria, run_case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broken-runs", type=int, default=3)
    parser.add_argument("--correct-runs", type=int, default=10)
    parser.add_argument("--case", action="append", default=[], help="only this case (repeatable)")
    args = parser.parse_args(argv)
    chosen = [case for case in CASES if not args.case or case.key in args.case]
    print("| bug class | criterion it must fail | broken: runs failing it | correct: runs passing all 8 "
          "| also failed (broken) |")
    print("|---|---|---|---|---|")
    all_good = True
    started = time.monotonic()
    for case in chosen:
        caught = 0
        also: Counter[str] = Counter()
        for _ in range(args.broken_runs):
            failed = failed_criteria(run_case(case, broken=True))
            caught += set(case.criteria) <= set(failed)
            also.update(c for c in failed if c not in case.criteria)
        clean = sum(not failed_criteria(run_case(case, broken=False)) for _ in range(args.correct_runs))
        all_good &= caught == args.broken_runs and clean == args.correct_runs
        extra = ", ".join(f"{name} ({n}/{args.broken_runs})" for name, n in sorted(also.items())) or "none"
        print(f"| {case.bug} | {', '.join(case.criteria)} | {caught}/{args.broken_runs} failed | "
              f"{clean}/{args.correct_runs} passed | {extra} |", flush=True)
    print(f"\n{len(chosen)} cases, {time.monotonic() - started:.0f}s", file=sys.stderr)
    return 0 if all_good else 1


if __name__ == "__main__":
    sys.exit(main())
