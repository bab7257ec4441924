"""1,500 -> 15,000 -> 150,000 jobs: does the rate hold as the tables grow, and what does memory do?

Each size runs ``run_scenario`` (15 parents x 100 / 1,000 / 10,000 children, zero simulated
work, 2 thread workers, stagger 0, 10 ms idle poll) in a fresh subprocess, so that its peak
RSS (``VmHWM``) belongs to that size alone. The "+ other queue" rows run the same on a
database whose goqite table already holds 100,000 messages of another queue name (goqite's
own "big table with multiple queues" benchmark): the index must keep them out of the way.

Reported per row: jobs/s (the plugin's throughput: completed / execution time) with its
ratio to the smallest size of the same repetition, and peak RSS with its growth per job
over the smallest size.

    python benchmarks/bench_scale.py            # 3 repetitions, up to 150,000 jobs (~10 min)
    python benchmarks/bench_scale.py --quick    # 2 repetitions of 1,500 and 9,000 jobs (< 30 s)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Bench, machine_line, med, print_table, ratio_cell

PARENTS = 15
FULL_SIZES = (1_500, 15_000, 150_000)
QUICK_SIZES = (1_500, 9_000)  # keeps --quick under 30 s on a loaded 2-core machine
FULL_PREFILL = 100_000
QUICK_PREFILL = 10_000


def _vm(field: str) -> int:
    """A /proc/self/status figure in KiB (VmHWM: peak resident set)."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(jobs: int, prefill: int, directory: str) -> dict[str, Any]:
    """One size in this (fresh) process: prefill, run, report throughput and peak memory."""
    from pytest_quaero.core import db
    from pytest_quaero.core.queue import create_schema
    from pytest_quaero.core.run import run_scenario
    from pytest_quaero.core.scenarios import Scenario
    from pytest_quaero.core.settings import Settings

    path = os.path.join(directory, "scale.db")
    settings = Settings(job_time=(0.0, 0.0), stagger=0.0, poll_interval=0.01, db_path=path)
    if prefill:
        db.prepare(path, settings)
        conn = db.connect(path, settings)
        # A small cache and 10,000-row transactions: the prefill's own memory must not become
        # the peak this process reports for the run.
        conn.execute("PRAGMA cache_size = -2048")
        create_schema(conn)
        body = b'{"id":"other","type":"crawler_url","parent_id":"p","url":"http://test-server/x","created_at":0}'
        for start in range(0, prefill, 10_000):
            conn.execute("BEGIN")
            conn.executemany("insert into goqite (queue, body) values ('other', ?)",
                             ((body,) for _ in range(min(10_000, prefill - start))))
            conn.execute("COMMIT")
        conn.close()
    baseline = _vm("VmHWM")
    scenario = Scenario("scale", PARENTS, jobs // PARENTS, time_limit=3600.0)
    started = time.perf_counter()
    result = run_scenario(scenario, settings, run_dir=directory)
    wall = time.perf_counter() - started
    return {
        "jobs": jobs,
        "prefill": prefill,
        "completed": result.jobs_completed,
        "busy": result.busy_errors,
        "throughput": result.throughput,
        "execution_time": result.execution_time,
        "wall": wall,
        "hwm_kib": _vm("VmHWM"),
        "baseline_kib": baseline,
        "passed_integrity": result.hierarchy_integrity == 100.0 and result.messages_left == 0,
    }


def run_child(jobs: int, prefill: int, root: Path) -> dict[str, Any]:
    directory = tempfile.mkdtemp(dir=root)
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(jobs), str(prefill), directory],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(child(int(argv[1]), int(argv[2]), argv[3])))
        return 0
    bench = Bench(__doc__.splitlines()[0], reps=3, quick_reps=2)
    args = bench.parse(argv)
    assert bench.dir is not None
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    prefill = QUICK_PREFILL if args.quick else FULL_PREFILL
    # The other-queue variant at the smallest and the largest size (the middle adds little).
    variants = [(n, 0) for n in sizes] + [(sizes[0], prefill), (sizes[-1], prefill)]
    data: dict[tuple[int, int], list[dict[str, Any]]] = {v: [] for v in variants}
    print(f"bench_scale: {args.reps} repetitions, sizes {', '.join(f'{n:,}' for n in sizes)}, other queue "
          f"{prefill:,}; {machine_line()}", flush=True)
    started = time.perf_counter()
    try:
        for rep in range(args.reps):
            for variant in (variants if rep % 2 == 0 else list(reversed(variants))):
                data[variant].append(run_child(*variant, bench.dir))
                last = data[variant][-1]
                print(f"  {variant[0]:>7,} jobs (+{variant[1]:,}): {last['throughput']:,.0f} jobs/s, "
                      f"peak {last['hwm_kib'] / 1024:.0f} MiB", file=sys.stderr)
            print(f"  repetition {rep + 1}/{args.reps} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    finally:
        bench.cleanup()

    print()
    rows: list[list[object]] = []
    for variant in variants:
        jobs, other = variant
        runs = data[variant]
        base = data[(sizes[0], other)]
        rates = [r["throughput"] for r in runs]
        hwm = [r["hwm_kib"] / 1024 for r in runs]
        growth = [1024 * (r["hwm_kib"] - b["hwm_kib"]) / (jobs - sizes[0]) for r, b in zip(runs, base, strict=True)] \
            if jobs != sizes[0] else []
        rows.append([
            f"{jobs:,}" + (f" + {other:,} other queue" if other else ""),
            f"{min(rates):,.0f}", f"{med(rates):,.0f}",
            ratio_cell([r["throughput"] / b["throughput"] for r, b in zip(runs, base, strict=True)]),
            f"{min(hwm):.0f} / {med(hwm):.0f}",
            (f"{min(growth):,.0f} / {med(growth):,.0f}" if growth else "-"),
            f"{med([r['execution_time'] for r in runs]):.1f}",
            "yes" if all(r["passed_integrity"] and r["completed"] == jobs for r in runs) else "NO",
            str(sum(r["busy"] for r in runs)),
        ])
    print_table(["jobs", "jobs/s min", "jobs/s median", f"x {sizes[0]:,} (same queue)", "peak RSS MiB min / med",
                 "RSS bytes/job over smallest", "exec s (median)", "all done + integrity", "busy errors"], rows)
    print()
    largest, smallest = data[(sizes[-1], 0)], data[(sizes[0], 0)]
    pairs = list(zip(largest, smallest, strict=True))
    print(f"Targets: {sizes[-1]:,} jobs >= 0.8x the rate of {sizes[0]:,}: "
          f"{ratio_cell([r['throughput'] / b['throughput'] for r, b in pairs])}; "
          f"peak memory growth < 1,024 bytes/job: "
          f"{med([1024 * (r['hwm_kib'] - b['hwm_kib']) / (sizes[-1] - sizes[0]) for r, b in pairs]):,.0f} (median)")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
