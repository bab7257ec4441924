"""Stall detection: an empty receive while a message that was visible before it stays visible."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gallery.cases import BASE, TINY

from pytest_quaero.core import db
from pytest_quaero.core.contention import ContentionLoad
from pytest_quaero.core.queue import Message, Queue
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import JobStore
from pytest_quaero.core.worker import Endpoint, open_endpoint


class EveryOtherReceive(Queue):
    """A receive that skips every other call (a filter bug): it returns nothing with messages waiting."""

    calls = 0

    def receive(self) -> Message | None:
        self.calls += 1
        return None if self.calls % 2 else super().receive()


class SwallowingReceive(Queue):
    """A receive on a busy_timeout-0 connection that catches "database is locked" and returns nothing."""

    def receive(self) -> Message | None:
        try:
            return super().receive()
        except sqlite3.OperationalError:
            return None


def endpoint(queue_class: type[Queue], busy_timeout_ms: int | None = None):  # type: ignore[no-untyped-def]
    def factory(db_path: str, settings: Settings) -> Endpoint:
        conn = db.connect(db_path, settings)
        if busy_timeout_ms is not None:
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        queue = queue_class(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                            max_receive=settings.max_receive)
        return Endpoint(queue=queue, store=JobStore(conn), close=conn.close)

    return factory


def test_a_receive_that_skips_messages_is_a_stall_with_the_lock_free(tmp_path: Path) -> None:
    result = run_scenario(TINY, BASE, run_dir=tmp_path, endpoint_factory=endpoint(EveryOtherReceive))
    stalls = result.extra["stalls"]
    assert stalls["lock_free"] > 0 and stalls["examples"], stalls
    # most are told apart as lock-free; one that happens while another worker writes reads as "lock held"
    assert stalls["lock_free"] > stalls["lock_held"], stalls


def test_a_swallowed_lock_error_is_a_stall_and_a_busy_error(tmp_path: Path) -> None:
    load = ContentionLoad.from_spec("writer:hold=30ms,every=60ms")
    load.prepare()
    try:
        # 60 jobs and producers that keep retrying: on a loaded CI machine the 30-job run with five
        # save attempts lost a parent to the load writer and ended in 0.5s without one stall
        result = run_scenario(Scenario("gallery", 3, 20, 30.0), BASE.replace(retry_attempts=10), run_dir=tmp_path,
                              endpoint_factory=endpoint(SwallowingReceive, 0), disturbances=[load],
                              sample_interval=0.05, deadline=30.0)
    finally:
        load.close()
    stalls = result.extra["stalls"]
    assert stalls["lock_error_seen"] + stalls["lock_held"] > 0, stalls
    assert result.hidden_busy_errors > 0 and result.busy_errors >= result.hidden_busy_errors


def test_the_correct_queue_never_stalls(tmp_path: Path) -> None:
    result = run_scenario(TINY, BASE, run_dir=tmp_path, endpoint_factory=open_endpoint)
    assert result.extra["stalls"]["total"] == 0, result.extra["stalls"]
