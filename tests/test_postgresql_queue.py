"""goqite's queue on PostgreSQL: its semantics, the claim under concurrency, and goqite PR #72's failure."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pg_support
import pytest
from pg_support import MISSING, needs_postgresql

from pytest_quaero.core.settings import Settings

pytestmark = needs_postgresql
pg_server, pg_schema = pg_support.pg_server, pg_support.pg_schema  # the shared fixtures

if MISSING is None:
    import psycopg

    from pytest_quaero.core.postgresql.connect import connect
    from pytest_quaero.core.postgresql.errors import lock_error_name
    from pytest_quaero.core.postgresql.queue import GOQITE_RECEIVE_SQL, PgQueue

    class SerializableGoqite(PgQueue):
        """goqite v0.4.0: its statement, in a SERIALIZABLE transaction (internal/sql InTx)."""

        RECEIVE_SQL = GOQITE_RECEIVE_SQL
        RECEIVE_ISOLATION = "SERIALIZABLE"

    class ReadCommittedGoqite(PgQueue):
        """goqite's statement as it stands, at the server's default isolation."""

        RECEIVE_SQL = GOQITE_RECEIVE_SQL


@pytest.fixture
def queue(pg_schema: Any) -> Any:
    conn = connect(pg_schema.dsn, Settings())
    yield PgQueue(conn, "jobs", visibility_timeout=0.3, max_receive=2)
    conn.close()


def test_send_receive_delete_in_goqite_order(queue: Any) -> None:
    first = queue.send(b"first")
    queue.send(b"second")
    urgent = queue.send(b"urgent", priority=5)
    assert first.startswith("m_") and len(first) == 34  # goqite's id shape: m_ + 32 hex digits
    assert [queue.receive().body for _ in range(3)] == [b"urgent", b"first", b"second"]
    assert queue.receive() is None
    assert queue.delete(urgent) is True
    assert queue.delete(urgent) is False  # a repeated ack removes nothing
    assert len(queue) == 2


def test_visibility_timeout_redelivery_and_max_receive(queue: Any) -> None:
    sent = queue.send(b"job")
    assert queue.receive().received == 1
    assert queue.receive() is None  # in flight
    assert queue.counts().in_flight == 1
    time.sleep(0.35)
    again = queue.receive()
    assert (again.id, again.received) == (sent, 2)
    time.sleep(0.35)
    assert queue.receive() is None  # received max_receive times: dead, never delivered again
    counts = queue.counts()
    assert (counts.total, counts.visible, counts.dead) == (1, 0, 1)


def test_delay_and_extend(queue: Any) -> None:
    queue.send(b"later", delay=60)
    assert queue.receive() is None
    assert queue.counts().in_flight == 1
    now = queue.send(b"now")
    assert queue.receive().id == now
    queue.extend(now, 60)
    time.sleep(0.35)
    assert queue.receive() is None  # the extension outlived the visibility timeout


def test_queues_share_the_table_but_not_messages(pg_schema: Any) -> None:
    conn = connect(pg_schema.dsn, Settings())
    PgQueue(conn, "other").send(b"not yours")
    mine = PgQueue(conn, "mine")
    assert mine.receive() is None and len(mine) == 0
    conn.close()


def _drain(dsn: str, queue_class: type, workers: int) -> tuple[Counter[bytes], Counter[str]]:
    """Every worker claims and deletes until the queue is empty; what each claimed, and its errors."""
    got: Counter[bytes] = Counter()
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def work() -> None:
        with connect(dsn, Settings()) as conn:
            queue = queue_class(conn, "jobs", visibility_timeout=60)
            while len(queue):
                try:
                    message = queue.receive()
                except psycopg.Error as exc:
                    with lock:
                        errors[lock_error_name(exc) or str(exc)] += 1
                    continue
                if message is not None:
                    with lock:
                        got[message.body] += 1
                    queue.delete(message.id)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return got, errors


def _fill(dsn: str, count: int) -> None:
    with connect(dsn, Settings()) as conn:
        queue = PgQueue(conn, "jobs")
        for number in range(count):
            queue.send(str(number).encode())


def test_concurrent_claims_skip_locked_each_message_once_without_errors(pg_schema: Any) -> None:
    _fill(pg_schema.dsn, 200)
    got, errors = _drain(pg_schema.dsn, PgQueue, workers=6)
    assert len(got) == 200 and set(got.values()) == {1}
    assert not errors


def test_goqite_v040_receive_under_serializable_fails_with_40001(pg_schema: Any) -> None:
    # goqite PR #72: concurrent receives under SERIALIZABLE raise serialization failures
    _fill(pg_schema.dsn, 150)
    got, errors = _drain(pg_schema.dsn, SerializableGoqite, workers=6)
    assert len(got) == 150
    assert errors["40001 serialization_failure"] > 0, errors


def test_goqite_receive_without_a_row_lock_under_read_committed_delivers_twice(pg_schema: Any) -> None:
    # the subquery picks an id without locking it: a second claim waiting on the row re-checks
    # only "id = <that id>" once the first commits, and claims the same message again
    _fill(pg_schema.dsn, 150)
    got, errors = _drain(pg_schema.dsn, ReadCommittedGoqite, workers=6)
    assert not errors
    assert max(got.values()) > 1, "no message was claimed twice"
