"""pytest-quaero extended through its hooks: a job handler, a scenario, a criterion, an observer.

    pytest --quaero-scenario=burst                          # the scenario added below
    pytest --quaero-scenario=burst --quaero-worker-mode=process

All four are module-level functions of this conftest.py, so the spawned worker
processes of process mode find the handler by importing this file again.
"""

from __future__ import annotations

import json
import os
import threading
import time

from pytest_quaero import Criterion, Scenario, Verdict, connect

# ---------------------------------------------------------------- a job handler of our own

_local = threading.local()


def _connection(context):
    # One connection per worker thread (or process), opened with the run's pragmas.
    conn = getattr(_local, "conn", None)
    if conn is None or getattr(_local, "path", None) != context.db_path:
        conn = _local.conn = connect(context.db_path, context.settings)
        _local.path = context.db_path
        conn.execute("create table if not exists pages (job_id text primary key, url text, worker text, "
                      "fetched_at real)")
    return conn


def pytest_quaero_handle_job(job, context):
    """'Fetch' the page (a short sleep) and store it: one more writer in the database.

    A lock error raised here is not retried: the message comes back after the
    visibility timeout, which the criteria then see as a redelivery.
    """
    time.sleep(0.002)
    _connection(context).execute(
        "insert or replace into pages (job_id, url, worker, fetched_at) values (?, ?, ?, ?)",
        (job.job_id, job.url, context.worker, time.time()),
    )
    return True  # handled: the default simulated work does not run as well


# ---------------------------------------------------------------- a scenario of our own


def pytest_quaero_scenarios():
    # Many small parents created at once: producer contention more than worker contention.
    return [Scenario("burst", parents=20, children=5, time_limit=120.0, description="Burst of small crawls")]


# ---------------------------------------------------------------- a criterion of our own


def _latency_p95(result, thresholds):
    limit = 5.0
    return Verdict("latency_p95", "Enqueue-to-Done Latency p95", f"{result.latency_p95 * 1000:.0f}ms",
                   f"< {limit * 1000:.0f}ms", result.latency_p95 < limit, result.latency_p95)


def pytest_quaero_criteria(scenario, result):
    # Returned for every scenario; each Criterion becomes an item quaero[<scenario>]::latency_p95.
    return [Criterion("latency_p95", "Enqueue-to-Done Latency p95", _latency_p95)]


# ---------------------------------------------------------------- an observer


def pytest_quaero_result(result):
    """Append each finished run's headline numbers to .quaero/metrics.jsonl (push them anywhere)."""
    os.makedirs(".quaero", exist_ok=True)
    line = {"scenario": result.scenario, "run_id": result.run_id, "passed": result.passed,
            "jobs_completed": result.jobs_completed, "busy_errors": result.busy_errors,
            "throughput": round(result.throughput, 2), "latency_p95": round(result.latency_p95, 4)}
    with open(os.path.join(".quaero", "metrics.jsonl"), "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
