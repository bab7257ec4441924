"""The crawl-job store on PostgreSQL: the same hierarchy rules, exact under concurrent completions,
and the template's integrity SQL judged by the SQLite backend's own code."""

from __future__ import annotations

import threading
from typing import Any

import pg_support
import pytest
from pg_support import MISSING, needs_postgresql

from pytest_quaero.core import integrity
from pytest_quaero.core.settings import Settings

pytestmark = needs_postgresql
pg_server, pg_schema = pg_support.pg_server, pg_support.pg_schema  # the shared fixtures

if MISSING is None:
    import psycopg

    from pytest_quaero.core.postgresql import integrity as pg_integrity
    from pytest_quaero.core.postgresql.connect import connect
    from pytest_quaero.core.postgresql.queue import PgQueue
    from pytest_quaero.core.postgresql.store import PgJobStore


@pytest.fixture
def conn(pg_schema: Any) -> Any:
    conn = connect(pg_schema.dsn, Settings())
    yield conn
    conn.close()


def test_child_and_message_commit_together_or_not_at_all(conn: Any) -> None:
    store, queue = PgJobStore(conn), PgQueue(conn)
    store.save_parent("r-parent-1", "Crawl", 2)
    store.create_child("r-child-1-1", "r-parent-1", "http://x/1", enqueue=lambda: queue.send(b"1"))

    def fails() -> None:
        queue.send(b"2")
        raise RuntimeError("enqueue failed after the send")

    with pytest.raises(RuntimeError):
        store.create_child("r-child-1-2", "r-parent-1", "http://x/2", enqueue=fails)
    assert store.get("r-child-1-2") is None and len(queue) == 1  # neither the row nor its message
    assert [child["id"] for child in store.children("r-parent-1")] == ["r-child-1-1"]


def test_finishing_children_moves_the_parent_and_completes_it(conn: Any) -> None:
    store = PgJobStore(conn)
    store.save_parent("p", "Crawl", 2)
    for child in ("c1", "c2"):
        store.create_child(child, "p", f"http://x/{child}")
    store.mark_running("c1")
    assert store.get("c1")["status"] == "running"
    assert store.finish_child("c1", "p") is True
    assert store.finish_child("c1", "p") is False  # a second delivery finishes nothing: a duplicate
    store.record_attempt_failure("c2", "Timeout: slow page")
    assert store.get("c2")["status"] == "pending" and store.get("c2")["error"] == "Timeout: slow page"
    assert store.finish_child("c2", "p", failed=True, error="gave up") is True
    parent = store.get("p")
    assert (parent["status"], parent["completed_urls"], parent["failed_urls"], parent["pending_urls"]) == (
        "completed", 1, 1, 0)


def test_concurrent_completions_of_one_parent_are_counted_exactly(pg_schema: Any, conn: Any) -> None:
    store = PgJobStore(conn)
    store.save_parent("p", "Crawl", 120)
    for number in range(120):
        store.create_child(f"c{number}", "p", "u")
    errors: list[BaseException] = []

    def finish(numbers: range) -> None:
        with connect(pg_schema.dsn, Settings()) as own:
            mine = PgJobStore(own)
            for number in numbers:
                try:
                    # every child twice: the second delivery must count nothing
                    mine.finish_child(f"c{number}", "p")
                    mine.finish_child(f"c{number % 120}", "p")
                except psycopg.Error as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=finish, args=(range(start, 120, 6),)) for start in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    parent = store.get("p")
    assert (parent["completed_urls"], parent["pending_urls"], parent["status"]) == (120, 0, "completed")


def test_integrity_sql_on_postgresql_matches_the_sqlite_judgement(conn: Any) -> None:
    store, queue = PgJobStore(conn), PgQueue(conn, "jobs", max_receive=1)
    run = "abcd1234"
    for p in (1, 2):
        store.save_parent(integrity.parent_id(run, p), f"Crawl {p}", 2)
        for c in (1, 2):
            store.create_child(integrity.child_id(run, p, c), integrity.parent_id(run, p), "u")
    for c in (1, 2):
        store.finish_child(integrity.child_id(run, 1, c), integrity.parent_id(run, 1))
    conn.execute("insert into crawl_jobs (id, parent_id, job_type) values (%s, 'nobody', 'crawler_url')",
                 (f"{run}-child-9-9",))  # an orphan
    queue.send(f'{{"id": "{integrity.child_id(run, 2, 1)}"}}'.encode())
    queue.receive()  # received max_receive times: dead
    checks = pg_integrity.check(conn, run, parents=2, children_per_parent=2, queue_name="jobs", max_receive=1)
    assert (checks["orphans"], checks["children_completed"], checks["unfinished_children"]) == (1, 2, 3)
    assert (checks["messages_left"], checks["dead_messages"]) == (1, 1)
    # child 2-1 still has its message; 2-2 has none and is unfinished: lost (and the orphan too)
    assert sorted(checks["lost_examples"]) == [f"{run}-child-2-2", f"{run}-child-9-9"]
    assert checks["parents_ok"] == 2 and checks["missing_parents"] == [] and not checks["progress_mismatches"]
    assert all("GLOB" not in query["sql"] for query in checks["queries"])  # the statements that really ran
