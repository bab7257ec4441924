"""The crawl-job store: parents and children, child + message in one transaction, progress in one statement."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from pytest_quaero.core import db
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.retry import Retrier
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import JobStore, create_schema


@pytest.fixture
def store(conn: sqlite3.Connection) -> JobStore:
    return JobStore(conn)


@pytest.fixture
def queue(conn: sqlite3.Connection) -> Queue:
    return Queue(conn, "quaero_jobs")


def _family(store: JobStore, queue: Queue | None = None, children: int = 3, parent: str = "p1") -> list[str]:
    store.save_parent(parent, "Crawl job 1", children)
    ids = []
    for c in range(1, children + 1):
        cid = f"{parent}-c{c}"
        enqueue = (lambda cid=cid: queue.send(cid.encode())) if queue is not None else None
        store.create_child(cid, parent, f"http://test-server/{cid}", f"page-{c}", enqueue=enqueue)
        ids.append(cid)
    return ids


def test_schema_columns(conn: sqlite3.Connection) -> None:
    columns = {row[1] for row in conn.execute("pragma table_info('crawl_jobs')")}
    assert {
        "id", "parent_id", "job_type", "name", "url", "status", "total_urls", "completed_urls", "failed_urls",
        "pending_urls", "created_at", "started_at", "completed_at", "error",
    } <= columns
    create_schema(conn)  # idempotent


def test_parent_row(store: JobStore) -> None:
    store.save_parent("p1", "Crawl job 1", 20)
    parent = store.get("p1")
    assert parent is not None
    assert parent["parent_id"] == ""
    assert parent["job_type"] == "parent"
    assert parent["status"] == "running"
    assert (parent["total_urls"], parent["completed_urls"], parent["failed_urls"], parent["pending_urls"]) == (
        20, 0, 0, 20)
    assert parent["started_at"] is not None
    assert store.get("nope") is None


def test_children_link_to_their_parent(store: JobStore, queue: Queue) -> None:
    ids = _family(store, queue, children=3)
    children = store.children("p1")
    assert [c["id"] for c in children] == ids
    assert {c["parent_id"] for c in children} == {"p1"}
    assert {c["job_type"] for c in children} == {"crawler_url"}
    assert {c["status"] for c in children} == {"pending"}
    assert children[0]["url"] == "http://test-server/p1-c1"
    assert len(queue) == 3


def test_duplicate_parent_is_an_integrity_error(store: JobStore) -> None:
    store.save_parent("p1", "x", 1)
    with pytest.raises(sqlite3.IntegrityError):
        store.save_parent("p1", "x", 1)


def test_child_and_message_in_one_transaction(store: JobStore, queue: Queue, conn: sqlite3.Connection) -> None:
    store.save_parent("p1", "Crawl job 1", 2)

    def enqueue_then_fail() -> None:
        queue.send(b"orphan message")
        raise RuntimeError("enqueue failed")

    with pytest.raises(RuntimeError, match="enqueue failed"):
        store.create_child("p1-c1", "p1", "http://x", enqueue=enqueue_then_fail)
    assert store.get("p1-c1") is None
    assert len(queue) == 0
    assert not conn.in_transaction


def test_duplicate_child_leaves_no_message(store: JobStore, queue: Queue) -> None:
    store.save_parent("p1", "Crawl job 1", 2)
    store.create_child("p1-c1", "p1", "http://x", enqueue=lambda: queue.send(b"first"))
    with pytest.raises(sqlite3.IntegrityError):
        store.create_child("p1-c1", "p1", "http://x", enqueue=lambda: queue.send(b"second"))
    assert len(queue) == 1


def test_create_child_commits_for_other_connections(store: JobStore, queue: Queue, path: Path) -> None:
    _family(store, queue, children=2)
    other = db.connect(path, Settings())
    try:
        assert other.execute("select count(*) from crawl_jobs where parent_id = 'p1'").fetchone()[0] == 2
        assert other.execute("select count(*) from goqite").fetchone()[0] == 2
    finally:
        other.close()


def test_finish_child_moves_parent_counters(store: JobStore, queue: Queue) -> None:
    ids = _family(store, queue, children=3)
    store.mark_running(ids[0])
    assert store.get(ids[0])["status"] == "running"  # type: ignore[index]
    assert store.finish_child(ids[0], "p1") is True
    child = store.get(ids[0])
    assert child["status"] == "completed" and child["completed_at"] is not None  # type: ignore[index]
    parent = store.get("p1")
    assert (parent["completed_urls"], parent["failed_urls"], parent["pending_urls"]) == (1, 0, 2)  # type: ignore[index]
    assert parent["status"] == "running"  # type: ignore[index]
    assert parent["completed_at"] is None  # type: ignore[index]


def test_parent_completes_when_pending_reaches_zero(store: JobStore, queue: Queue) -> None:
    ids = _family(store, queue, children=3)
    store.finish_child(ids[0], "p1")
    store.finish_child(ids[1], "p1", failed=True, error="boom")
    assert store.get("p1")["status"] == "running"  # type: ignore[index]
    store.finish_child(ids[2], "p1")
    parent = store.get("p1")
    assert parent["status"] == "completed"  # type: ignore[index]
    assert (parent["total_urls"], parent["completed_urls"], parent["failed_urls"], parent["pending_urls"]) == (
        3, 2, 1, 0)  # type: ignore[index]
    assert parent["completed_at"] is not None  # type: ignore[index]


def test_second_finish_is_a_duplicate(store: JobStore, queue: Queue) -> None:
    ids = _family(store, queue, children=2)
    assert store.finish_child(ids[0], "p1") is True
    assert store.finish_child(ids[0], "p1") is False
    assert store.finish_child(ids[0], "p1", failed=True) is False
    parent = store.get("p1")
    assert (parent["completed_urls"], parent["failed_urls"], parent["pending_urls"]) == (1, 0, 1)  # type: ignore[index]
    assert store.get(ids[0])["status"] == "completed"  # type: ignore[index]
    assert store.finish_child("no-such-child", "p1") is False


def test_failed_child_path(store: JobStore, queue: Queue) -> None:
    ids = _family(store, queue, children=1)
    store.mark_running(ids[0])
    store.record_attempt_failure(ids[0], "ValueError: first try")
    child = store.get(ids[0])
    assert (child["status"], child["error"]) == ("pending", "ValueError: first try")  # type: ignore[index]
    store.mark_running(ids[0])
    assert store.get(ids[0])["error"] == ""  # type: ignore[index]
    assert store.finish_child(ids[0], "p1", failed=True, error="ValueError: " + "x" * 1000) is True
    child = store.get(ids[0])
    assert child["status"] == "failed"  # type: ignore[index]
    assert len(child["error"]) == 500  # type: ignore[index]
    parent = store.get("p1")
    assert (parent["status"], parent["completed_urls"], parent["failed_urls"], parent["pending_urls"]) == (
        "completed", 0, 1, 0)  # type: ignore[index]


def test_a_finished_child_is_never_reopened(store: JobStore, queue: Queue) -> None:
    ids = _family(store, queue, children=1)
    store.finish_child(ids[0], "p1")
    store.mark_running(ids[0])
    store.record_attempt_failure(ids[0], "late")
    child = store.get(ids[0])
    assert (child["status"], child["error"]) == ("completed", "")  # type: ignore[index]


def test_parent_counters_never_underflow(store: JobStore, conn: sqlite3.Connection) -> None:
    store.save_parent("p1", "x", 1)
    store.create_child("p1-c1", "p1", "u")
    store.create_child("p1-c2", "p1", "u")  # one more child than the parent expects
    store.finish_child("p1-c1", "p1")
    store.finish_child("p1-c2", "p1")
    parent = store.get("p1")
    assert parent["pending_urls"] == 0 and parent["completed_urls"] == 1  # type: ignore[index]


def test_progress_update_is_one_statement(store: JobStore, conn: sqlite3.Connection) -> None:
    """The parent's counters and status move in one UPDATE (no read-modify-write of the parent)."""
    ids = _family(store, None, children=1)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        store.finish_child(ids[0], "p1")
    finally:
        conn.set_trace_callback(None)
    on_parent = [s for s in statements if "pending_urls" in s]
    assert len(on_parent) == 1
    assert on_parent[0].lower().startswith("update crawl_jobs set")
    assert "completed" in on_parent[0]
    assert statements[0].upper().startswith("BEGIN IMMEDIATE")
    assert statements[-1].upper() == "COMMIT"


def test_deferred_mode_uses_plain_begin(conn: sqlite3.Connection) -> None:
    store = JobStore(conn, begin_immediate=False)
    store.save_parent("p1", "x", 1)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        store.create_child("p1-c1", "p1", "u")
    finally:
        conn.set_trace_callback(None)
    assert statements[0].upper() == "BEGIN"


def test_concurrent_finishes_keep_counters_exact(path: Path) -> None:
    """Many threads, own connections, finishing children of one parent: counters add up, once each."""
    setup = db.connect(path, Settings())
    store = JobStore(setup)
    total = 60
    store.save_parent("p1", "x", total)
    for c in range(total):
        store.create_child(f"c{c}", "p1", "u")
    setup.close()
    results: list[bool] = []
    lock = threading.Lock()

    def finisher(offset: int) -> None:
        conn = db.connect(path, Settings())
        own = JobStore(conn)
        retrier = Retrier(5, 0.05)
        try:
            # every thread tries every child: exactly one finish per child may count
            for c in range(total):
                ok = retrier.call("progress_update", lambda c=c: own.finish_child(f"c{(c + offset) % total}", "p1"))
                with lock:
                    results.append(ok)
        finally:
            conn.close()

    threads = [threading.Thread(target=finisher, args=(i * 7,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results.count(True) == total
    assert results.count(False) == 3 * total
    check = db.connect(path, Settings())
    try:
        parent = JobStore(check).get("p1")
    finally:
        check.close()
    assert (parent["status"], parent["completed_urls"], parent["pending_urls"]) == ("completed", total, 0)  # type: ignore[index]
