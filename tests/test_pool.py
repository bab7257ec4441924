"""The worker pool on its own: staggered starts, the receive/process/delete loop, its events."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_quaero.core import db
from pytest_quaero.core.jobs import Job, JobContext, SimulatedWork, decode_job, encode_job
from pytest_quaero.core.pool import WorkerPool
from pytest_quaero.core.queue import Message, Queue
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import JobStore
from pytest_quaero.core.worker import open_endpoint

FAST = dict(workers=2, stagger="100ms", job_time="1ms", poll_interval="50ms", visibility_timeout="300ms")


def _settings(**changes: Any) -> Settings:
    return Settings().replace(source="test", **{**FAST, **changes})


def _seed(conn: sqlite3.Connection, settings: Settings, children: int) -> list[str]:
    store = JobStore(conn)
    queue = Queue(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                  max_receive=settings.max_receive)
    store.save_parent("p1", "Crawl job 1", children)
    ids = []
    for c in range(children):
        cid = f"p1-c{c}"
        body = encode_job(cid, "p1", f"http://test-server/{c}")
        store.create_child(cid, "p1", f"http://test-server/{c}", enqueue=lambda body=body: queue.send(body))
        ids.append(cid)
    return ids


def _drain(
    pool: WorkerPool, until: Callable[[list[tuple[Any, ...]]], bool], timeout: float = 30
) -> list[tuple[Any, ...]]:
    events: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events.extend(pool.poll_events())
        if until(events):
            return events
        time.sleep(0.02)
    raise AssertionError(f"pool did not get there in {timeout}s; events so far: {events}")


def _jobs(events: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [e for e in events if e[0] == "job"]


# ---------------------------------------------------------------- pieces


def test_job_body_round_trip() -> None:
    body = encode_job("c1", "p1", "http://x/1")
    job = decode_job(Message("m_" + "a" * 32, body, 2))
    assert (job.job_id, job.parent_id, job.url, job.job_type) == ("c1", "p1", "http://x/1", "crawler_url")
    assert (job.message_id, job.attempt) == ("m_" + "a" * 32, 2)
    assert abs(job.enqueued_at - time.time()) < 60


def test_simulated_work_is_seeded_per_job() -> None:
    work = SimulatedWork(0.005, 0.020, seed=1)
    durations = [work.duration(f"job-{i}") for i in range(50)]
    assert all(0.005 <= d <= 0.020 for d in durations)
    assert durations == [SimulatedWork(0.005, 0.020, seed=1).duration(f"job-{i}") for i in range(50)]
    assert durations != [SimulatedWork(0.005, 0.020, seed=2).duration(f"job-{i}") for i in range(50)]
    assert len(set(durations)) > 40
    assert SimulatedWork(0.01, 0.01).duration("x") == 0.01


def test_simulated_work_sleeps(path: Path) -> None:
    job = Job("c1", "p1", "u", "crawler_url", "m_x", 1, 0.0)
    started = time.monotonic()
    SimulatedWork(0.05, 0.05)(job, JobContext("JobWorker-1", 0, Settings(), str(path)))
    assert time.monotonic() - started >= 0.045


# ---------------------------------------------------------------- the pool


def test_workers_start_staggered_and_stop(path: Path) -> None:
    settings = _settings(workers=3, stagger="150ms")
    pool = WorkerPool(str(path), settings)
    pool_started = pool.start()
    try:
        events = _drain(pool, lambda ev: sum(e[0] == "started" for e in ev) == 3)
        assert pool.alive == 3
        with pytest.raises(RuntimeError, match="already running"):
            pool.start()
    finally:
        pool.stop()
    events += pool.poll_events()
    starts = {e[1]: e[3] - pool_started for e in events if e[0] == "started"}
    assert sorted(starts) == [0, 1, 2]
    for k, offset in starts.items():
        assert offset >= k * 0.150 - 0.005, (k, offset)  # never before its turn
        assert offset <= k * 0.150 + 2.0, (k, offset)  # and not wildly late, even on a busy machine
    assert starts[0] < starts[1] < starts[2]
    stopped = [e for e in events if e[0] == "stopped"]
    assert sorted(e[1] for e in stopped) == [0, 1, 2]
    assert pool.alive == 0
    pool.stop()  # a second stop is harmless


def test_stop_before_a_worker_turn_means_it_never_starts(path: Path) -> None:
    pool = WorkerPool(str(path), _settings(workers=2, stagger="10s"))
    pool.start()
    _drain(pool, lambda ev: any(e[0] == "started" for e in ev))
    pool.stop()
    events = pool.poll_events()
    assert not any(e[0] == "started" and e[1] == 1 for e in events)


def test_pool_processes_and_deletes(path: Path, conn: sqlite3.Connection) -> None:
    settings = _settings()
    ids = _seed(conn, settings, 6)
    with WorkerPool(str(path), settings) as pool:
        events = _drain(pool, lambda ev: len(_jobs(ev)) >= 6)
    jobs = _jobs(events)
    assert sorted(e[2] for e in jobs) == sorted(ids)
    assert {e[3] for e in jobs} == {"completed"}
    for _, index, _, _, received_at, done_at, latency, attempt in jobs:
        assert index in (0, 1)
        assert done_at >= received_at
        assert latency >= 0
        assert attempt == 1
    assert conn.execute("select count(*) from goqite").fetchone()[0] == 0
    parent = JobStore(conn).get("p1")
    assert (parent["status"], parent["completed_urls"], parent["pending_urls"]) == ("completed", 6, 0)  # type: ignore[index]


def test_a_finished_job_delivered_again_is_a_duplicate(path: Path, conn: sqlite3.Connection) -> None:
    settings = _settings(workers=1)
    ids = _seed(conn, settings, 2)
    JobStore(conn).finish_child(ids[0], "p1")  # already processed once before this delivery
    with WorkerPool(str(path), settings) as pool:
        events = _drain(pool, lambda ev: len(_jobs(ev)) >= 2)
    outcomes = {e[2]: e[3] for e in _jobs(events)}
    assert outcomes == {ids[0]: "duplicate", ids[1]: "completed"}
    assert conn.execute("select count(*) from goqite").fetchone()[0] == 0  # the duplicate's message is acked too
    parent = JobStore(conn).get("p1")
    assert parent["completed_urls"] == 2  # type: ignore[index]


class _FailFirstDelivery:
    def __call__(self, job: Job, context: JobContext) -> None:
        if job.attempt == 1:
            raise RuntimeError(f"first delivery of {job.job_id}")


def test_handler_error_leaves_the_message_for_redelivery(path: Path, conn: sqlite3.Connection) -> None:
    settings = _settings(workers=1, visibility_timeout="200ms")
    ids = _seed(conn, settings, 1)
    with WorkerPool(str(path), settings, handler=_FailFirstDelivery()) as pool:
        events = _drain(pool, lambda ev: any(e[3] == "completed" for e in _jobs(ev)))
    assert [(e[2], e[3], e[7]) for e in _jobs(events)] == [(ids[0], "retry", 1), (ids[0], "completed", 2)]
    child = JobStore(conn).get(ids[0])
    assert (child["status"], child["error"]) == ("completed", "")  # type: ignore[index]


def test_a_worker_that_cannot_open_its_endpoint_says_so(path: Path) -> None:
    def broken(db_path: str, settings: Settings) -> Any:
        raise OSError("disk on fire")

    pool = WorkerPool(str(path), _settings(workers=1), endpoint_factory=broken)
    pool.start()
    try:
        events = _drain(pool, lambda ev: any(e[0] == "error" for e in ev))
    finally:
        pool.stop()
    errors = [e[2] for e in events if e[0] == "error"]
    assert any("disk on fire" in text for text in errors)


def test_default_endpoint_shares_one_connection(path: Path) -> None:
    endpoint = open_endpoint(str(path), _settings())
    try:
        assert endpoint.queue.conn is endpoint.store.conn
        assert db.read_pragmas(endpoint.queue.conn).busy_timeout_ms == 10_000
    finally:
        endpoint.close()
