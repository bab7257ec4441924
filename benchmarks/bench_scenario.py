"""The heavy scenario (15 parents x 100 children) with zero simulated work: jobs/s, and where it goes.

Every repetition runs, side by side on fresh files on disk:

* the raw goqite queue cycle (bench_queue's raw SQL loop, 2 threads and 1 thread), the yardstick;
* one thread doing a job's five transactions back to back with the plugin's store and queue
  (create child + send, receive, save running, finish, delete): the scenario's ceiling when
  the write lock is never contended;
* ``run_scenario(heavy)`` with ``job_time=0``, thread and process workers, uninstrumented:
  the plugin's own throughput (completed / execution time, as the criteria see it) and the
  processing rate (first receive -> last finished job, without pool start-up and drain
  detection around it);
* one more thread-mode run with every queue and store call timed from the outside
  (benchmarks/_timing.py; the plugin carries no timing code): where a job's time goes.

Settings: 2 workers, ``stagger=0`` and ``poll_interval=10ms`` so that the figure is the
harness's speed, not the template's deliberate 500 ms stagger and 1 s idle poll (a row with
the defaults is printed too, for scale).

    python benchmarks/bench_scenario.py            # 5 repetitions (~1 min)
    python benchmarks/bench_scenario.py --quick    # 3 repetitions (< 30 s)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Bench, fresh_db, machine_line, med, print_table, ratio_cell
from _timing import TimedEndpointFactory, WindowPool, collect
from bench_queue import _prepared, run_workers

from pytest_quaero.core import integrity, run
from pytest_quaero.core.monitor import Tally
from pytest_quaero.core.pool import decode_job, encode_job, open_endpoint
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.retry import Retrier
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import BUILTIN, Scenario
from pytest_quaero.core.settings import Settings

BENCH_SETTINGS = Settings(job_time=(0.0, 0.0), stagger=0.0, poll_interval=0.01)


def run_once(scenario: Scenario, settings: Settings, directory: Path, **options: Any) -> tuple[Any, WindowPool]:
    pools: list[WindowPool] = []

    def pool_factory(*args: Any, **kwargs: Any) -> WindowPool:
        pools.append(WindowPool(*args, **kwargs))
        return pools[-1]

    result = run_scenario(scenario, settings, run_dir=tempfile.mkdtemp(dir=directory), pool_factory=pool_factory,
                          **options)
    if result.jobs_completed != scenario.total_jobs or result.busy_errors:
        print(f"  note: {result.jobs_completed}/{scenario.total_jobs} completed, {result.busy_errors} busy errors",
              file=sys.stderr)
    return result, pools[0]


def job_cycles(path: str, seconds: float) -> float:
    """One thread doing a job's five transactions back to back, no contention: jobs/s.

    create child + send (one transaction), receive, save running, finish (child + parent),
    delete: the same store and queue calls the producers and workers make, through the same
    Retrier, minus the other 16 connections. What the scenario would reach if the write
    lock were never contended: the ceiling its per-job work sets.
    """
    endpoint = open_endpoint(path, BENCH_SETTINGS)
    store, queue = endpoint.store, endpoint.queue
    retrier = Retrier(5, 0.1, busy_timeout_ms=BENCH_SETTINGS.busy_timeout_ms)
    call = retrier.call
    store.save_parent("bench-parent-1", "parent", 10**9)
    jobs = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        cid = f"bench-child-1-{jobs}"
        url = f"http://test-server/parent-1/page-{jobs}"
        body = encode_job(cid, "bench-parent-1", url)
        # Each lambda is called (and retried) before the next iteration; the defaults bind this one's values.
        call("create_child", lambda cid=cid, url=url, body=body: store.create_child(
            cid, "bench-parent-1", url, "page", enqueue=lambda: queue.send(body)))
        message = call("queue_receive", queue.receive)
        job = decode_job(message)
        call("save_job", lambda job=job: store.mark_running(job.job_id))
        call("progress_update", lambda job=job: store.finish_child(job.job_id, job.parent_id))
        call("queue_delete", lambda message_id=message.id: queue.delete(message_id))
        jobs += 1
    endpoint.close()
    return jobs / seconds


def window_rate(result: Any, pool: WindowPool) -> float:
    if pool.first is None or pool.last is None or pool.last <= pool.first:
        return 0.0
    return result.jobs_completed / (pool.last - pool.first)


def _prepared_store(directory: Path, name: str) -> str:
    path = fresh_db(directory, name)
    run.prepare_database(path, BENCH_SETTINGS)  # as run_scenario prepares its file
    return path


class _MonitorTimer:
    """Times the monitor's queue counts, the event fold and the integrity SQL (breakdown run only)."""

    def __init__(self) -> None:
        self.seconds = {"counts": 0.0, "fold": 0.0, "integrity": 0.0}
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)
        seconds = self.seconds

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[key] += time.perf_counter() - started

        self._saved.append((owner, name, original))
        setattr(owner, name, timed)

    def __enter__(self) -> _MonitorTimer:
        self._wrap(Queue, "counts", "counts")
        self._wrap(Tally, "fold", "fold")
        self._wrap(integrity, "check", "integrity")
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)


def breakdown(scenario: Scenario, directory: Path) -> tuple[dict[str, float], dict[str, int], dict[str, float], Any]:
    out_dir = tempfile.mkdtemp(dir=directory)
    with _MonitorTimer() as monitor:
        result, _ = run_once(scenario, BENCH_SETTINGS, directory, endpoint_factory=TimedEndpointFactory(out_dir))
    seconds, counts, _ = collect(out_dir)
    return seconds, counts, dict(monitor.seconds), result


ROWS = [
    ("receive (claim one message)", "worker_receive"),
    ("save running (mark_running)", "worker_save_running"),
    ("save completed (BEGIN IMMEDIATE, read, child UPDATE)", "worker_save_completed"),
    ("progress update (parent UPDATE, COMMIT)", "worker_progress_update"),
    ("delete", "worker_delete"),
    ("harness bookkeeping (decode, handler call, events, logs)", "worker_bookkeeping"),
    ("idle (empty receive, poll wait)", None),
]


def main(argv: list[str] | None = None) -> int:
    bench = Bench(__doc__.splitlines()[0], reps=5, quick_reps=3)
    args = bench.parse(argv)
    assert bench.dir is not None
    heavy = BUILTIN["heavy"]
    cycle_seconds = 0.5 if args.quick else 1.5
    raw2: list[float] = []
    raw1: list[float] = []
    ceiling: list[float] = []
    plugin: dict[str, list[float]] = {"thread": [], "process": []}
    window: dict[str, list[float]] = {"thread": [], "process": []}
    defaults: list[float] = []
    parts: list[dict[str, float]] = []
    jobs_done: list[int] = []
    monitor_parts: list[dict[str, float]] = []
    print(f"bench_scenario: {args.reps} repetitions of heavy ({heavy.total_jobs} jobs), zero work; {machine_line()}",
          flush=True)
    started = time.perf_counter()
    try:
        for rep in range(args.reps):
            raw2.append(run_workers("raw", "thread", 2, _prepared(bench.dir, f"raw2-{rep}"), cycle_seconds)[0])
            raw1.append(run_workers("raw", "thread", 1, _prepared(bench.dir, f"raw1-{rep}"), cycle_seconds)[0])
            ceiling.append(job_cycles(_prepared_store(bench.dir, f"jobs-{rep}"), cycle_seconds))
            for mode in ("thread", "process"):
                settings = BENCH_SETTINGS.replace(source="bench", worker_mode=mode)
                result, pool = run_once(heavy, settings, bench.dir)
                plugin[mode].append(result.throughput)
                window[mode].append(window_rate(result, pool))
            if not args.quick or rep == 0:
                result, _ = run_once(heavy, Settings(job_time=(0.0, 0.0)), bench.dir)
                defaults.append(result.throughput)
            seconds, _counts, monitor, result = breakdown(heavy, bench.dir)
            parts.append(seconds)
            monitor_parts.append(monitor)
            jobs_done.append(result.jobs_completed)
            print(f"  repetition {rep + 1}/{args.reps} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    finally:
        bench.cleanup()

    print()
    rows: list[list[object]] = []
    for name, values in (("raw goqite queue cycle, 2 threads", raw2), ("raw goqite queue cycle, 1 thread", raw1)):
        rows.append([name, f"{min(values):,.0f}", f"{med(values):,.0f}", "-", "-"])
    for mode in ("thread", "process"):
        for label, values in ((f"heavy, 2 {mode} workers: plugin throughput", plugin[mode]),
                              (f"heavy, 2 {mode} workers: processing window", window[mode])):
            rows.append([label, f"{min(values):,.0f}", f"{med(values):,.0f}",
                         ratio_cell([a / b for a, b in zip(values, raw2, strict=True)]),
                         ratio_cell([a / b for a, b in zip(values, raw1, strict=True)])])
    rows.append(["job cycle, 1 thread, no contention (5 transactions)", f"{min(ceiling):,.0f}", f"{med(ceiling):,.0f}",
                 ratio_cell([a / b for a, b in zip(ceiling, raw2, strict=True)]),
                 ratio_cell([a / b for a, b in zip(ceiling, raw1, strict=True)])])
    # --quick runs the template defaults in the first repetition only: pair that one with its raw figures.
    rows.append(["heavy, template defaults (stagger 500ms, poll 1s)", f"{min(defaults):,.0f}", f"{med(defaults):,.0f}",
                 ratio_cell([a / b for a, b in zip(defaults, raw2, strict=False)]),
                 ratio_cell([a / b for a, b in zip(defaults, raw1, strict=False)])])
    print_table(["jobs/s (cycles/s for raw)", "min", "median", "x raw 2 threads", "x raw 1 thread"], rows)
    print()
    print("Target: heavy with zero work >= 0.3x the raw queue cycle rate "
          "(plugin throughput, 2 threads vs raw 2 threads):",
          ratio_cell([a / b for a, b in zip(plugin["thread"], raw2, strict=True)]))
    print()

    # Breakdown: per job, microseconds of worker-thread time (both workers added up).
    print("Where a job's time goes (instrumented thread-mode runs): microseconds of worker time per job (both")
    print("workers added up). 'median run' is the one repetition with the median total, so its rows add up to")
    print("its total; 'min / median' are over all repetitions, row by row (not additive).")
    per_job: dict[str, list[float]] = {}
    for seconds, jobs in zip(parts, jobs_done, strict=True):
        for label, key in ROWS:
            value = (seconds.get("worker_idle", 0.0) + seconds.get("worker_receive_empty", 0.0)) if key is None \
                else seconds.get(key, 0.0)
            per_job.setdefault(label, []).append(1e6 * value / jobs)
        per_job.setdefault("total", []).append(1e6 * seconds.get("worker_lifetime", 0.0) / jobs)
        per_job.setdefault("producer", []).append(1e6 * seconds.get("producer_create_child", 0.0) / jobs)
    for key, label in (("counts", "monitor: queue counts (whole run)"),
                       ("fold", "monitor: folding worker events (whole run)"),
                       ("integrity", "integrity SQL after the drain")):
        per_job[label] = [1e6 * m[key] / jobs for m, jobs in zip(monitor_parts, jobs_done, strict=True)]
    middle = sorted(range(len(parts)), key=lambda i: per_job["total"][i])[len(parts) // 2]
    total = per_job["total"][middle]
    table: list[list[object]] = []
    for label, _ in ROWS:
        values = per_job[label]
        table.append([label, f"{values[middle]:.1f}", f"{100 * values[middle] / total:.0f}%",
                      f"{min(values):.1f} / {med(values):.1f}"])
    table.append(["worker time per job (sum of the rows)", f"{total:.1f}", "100%",
                  f"{min(per_job['total']):.1f} / {med(per_job['total']):.1f}"])
    for label in ("producer", "monitor: queue counts (whole run)", "monitor: folding worker events (whole run)",
                  "integrity SQL after the drain"):
        values = per_job[label]
        table.append(["producers: create child + send (15 threads, concurrent)" if label == "producer" else label,
                      f"{values[middle]:.1f}", "-", f"{min(values):.1f} / {med(values):.1f}"])
    print_table(["part", "us/job, median run", "share", "us/job min / median"], table)
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
