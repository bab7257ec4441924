"""The goqite-compatible queue: schema, ordering, visibility, extend, delete, max_receive, atomic receive."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pytest_quaero.core import db
from pytest_quaero.core.queue import Queue, create_schema
from pytest_quaero.core.settings import Settings

ID = re.compile(r"^m_[0-9a-f]{32}$")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def make_queue(conn: sqlite3.Connection) -> Callable[..., Queue]:
    def make(name: str = "quaero_jobs", visibility_timeout: float = 5.0, max_receive: int = 3) -> Queue:
        return Queue(conn, name, visibility_timeout=visibility_timeout, max_receive=max_receive)

    return make


def _row(conn: sqlite3.Connection, message_id: str) -> dict[str, Any]:
    cursor = conn.execute("select * from goqite where id = ?", (message_id,))
    row = cursor.fetchone()
    assert row is not None, message_id
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def _receive_within(queue: Queue, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = queue.receive()
        if message is not None:
            return message
        time.sleep(0.02)
    return None


# ---------------------------------------------------------------- schema


def test_goqite_table_is_strict_with_goqites_columns(conn: sqlite3.Connection) -> None:
    strict = conn.execute("select strict from pragma_table_list where name = 'goqite'").fetchone()
    assert strict == (1,)
    columns = {
        row[1]: (row[2].lower(), row[3], row[5])  # name: (type, notnull, pk)
        for row in conn.execute("pragma table_info('goqite')")
    }
    assert columns == {
        "id": ("text", 1, 1),  # strict tables make a primary key NOT NULL
        "created": ("text", 1, 0),
        "updated": ("text", 1, 0),
        "queue": ("text", 1, 0),
        "body": ("blob", 1, 0),
        "timeout": ("text", 1, 0),
        "received": ("integer", 1, 0),
        "priority": ("integer", 1, 0),
    }


def test_strict_rejects_a_wrong_type(conn: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.Error, match="cannot store"):
        conn.execute("insert into goqite (queue, body, received) values ('q', x'00', 'many')")


def test_index_on_queue_priority_desc_created(conn: sqlite3.Connection) -> None:
    names = [row[1] for row in conn.execute("pragma index_list('goqite')")]
    assert "goqite_queue_priority_created_idx" in names
    keys = [
        (row[2], row[3])  # column name, desc
        for row in conn.execute("pragma index_xinfo('goqite_queue_priority_created_idx')")
        if row[5]  # key columns only
    ]
    assert keys == [("queue", 0), ("priority", 1), ("created", 0)]


def test_receive_uses_the_index(conn: sqlite3.Connection) -> None:
    plan = " ".join(
        str(row[3])
        for row in conn.execute(
            "explain query plan select id from goqite where queue = ? and ? >= timeout and received < ? "
            "order by priority desc, created limit 1",
            ("q", "x", 3),
        )
    )
    assert "goqite_queue_priority_created_idx" in plan
    assert "TEMP B-TREE" not in plan.upper()


def test_create_schema_is_idempotent(conn: sqlite3.Connection) -> None:
    create_schema(conn)
    create_schema(conn)
    assert conn.execute("select count(*) from sqlite_master where name = 'goqite'").fetchone()[0] == 1


def test_send_returns_a_goqite_id_and_utc_millisecond_stamps(
    conn: sqlite3.Connection, make_queue: Callable[..., Queue]
) -> None:
    before = datetime.now(timezone.utc)
    message_id = make_queue().send(b"hello")
    after = datetime.now(timezone.utc)
    assert ID.match(message_id), message_id
    row = _row(conn, message_id)
    assert row["queue"] == "quaero_jobs"
    assert row["body"] == b"hello"
    assert row["received"] == 0 and row["priority"] == 0
    for column in ("created", "updated", "timeout"):
        assert STAMP.match(row[column]), (column, row[column])
        stamp = _parse(row[column])
        assert before - timedelta(seconds=2) <= stamp <= after + timedelta(seconds=2), (column, stamp)


def test_ids_are_unique(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    ids = {queue.send(b"x") for _ in range(200)}
    assert len(ids) == 200


def test_update_trigger_moves_updated(conn: sqlite3.Connection, make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    message_id = queue.send(b"x")
    first = _row(conn, message_id)["updated"]
    time.sleep(0.01)
    queue.extend(message_id, 60)
    second = _row(conn, message_id)
    assert second["updated"] > first
    assert second["created"] == _row(conn, message_id)["created"]
    trigger = conn.execute(
        "select count(*) from sqlite_master where type = 'trigger' and name = 'goqite_updated_timestamp'"
    ).fetchone()[0]
    assert trigger == 1


# ---------------------------------------------------------------- ordering


def test_fifo(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    sent = []
    for i in range(5):
        sent.append(queue.send(f"m{i}".encode()))
        time.sleep(0.002)  # distinct created stamps (milliseconds), as goqite orders by them
    received = [queue.receive() for _ in range(5)]
    assert [m.id for m in received] == sent  # type: ignore[union-attr]
    assert [m.body for m in received] == [f"m{i}".encode() for i in range(5)]  # type: ignore[union-attr]
    assert queue.receive() is None


def test_priority_first_then_fifo(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    order = [("a", 0), ("b", 5), ("c", 0), ("d", 10), ("e", 5), ("f", -1)]
    for body, priority in order:
        queue.send(body.encode(), priority=priority)
        time.sleep(0.002)
    bodies = [queue.receive().body.decode() for _ in order]  # type: ignore[union-attr]
    assert bodies == ["d", "b", "e", "a", "c", "f"]


def test_queues_sharing_the_table_are_separate(make_queue: Callable[..., Queue]) -> None:
    jobs, other = make_queue("jobs"), make_queue("other")
    job_id = jobs.send(b"job")
    other_id = other.send(b"other")
    assert other.receive().id == other_id  # type: ignore[union-attr]
    assert other.receive() is None
    assert other.delete(job_id) is False
    assert len(jobs) == 1 and len(other) == 1
    assert jobs.receive().id == job_id  # type: ignore[union-attr]


# ---------------------------------------------------------------- delay, visibility, extend


def test_delay(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    started = time.monotonic()
    message_id = queue.send(b"later", delay=0.4)
    early = queue.receive()
    assert early is None or time.monotonic() - started >= 0.35
    message = _receive_within(queue, 10)
    assert message is not None and message.id == message_id
    assert time.monotonic() - started >= 0.35
    assert message.received == 1


def test_negative_delay_is_refused(make_queue: Callable[..., Queue]) -> None:
    with pytest.raises(ValueError):
        make_queue().send(b"x", delay=-1)
    with pytest.raises(ValueError):
        make_queue().extend("m_x", -1)


def test_bad_queue_options_are_refused(conn: sqlite3.Connection) -> None:
    with pytest.raises(ValueError):
        Queue(conn, visibility_timeout=0)
    with pytest.raises(ValueError):
        Queue(conn, max_receive=0)


def test_visibility_timeout_redelivers(conn: sqlite3.Connection, make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout=0.3)
    message_id = queue.send(b"x")
    first = queue.receive()
    received_at = time.monotonic()
    assert first is not None and first.id == message_id and first.received == 1
    timeout = _parse(_row(conn, message_id)["timeout"])
    assert timedelta(seconds=0.2) < timeout - _parse(_row(conn, message_id)["updated"]) < timedelta(seconds=0.4)
    hidden = queue.receive()
    assert hidden is None or time.monotonic() - received_at >= 0.3
    assert queue.counts().in_flight == 1 or time.monotonic() - received_at >= 0.3
    second = _receive_within(queue, 10)
    assert second is not None and second.id == message_id
    assert second.received == 2
    assert time.monotonic() - received_at >= 0.25


def test_extend_keeps_a_message_hidden_from_now(conn: sqlite3.Connection, make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout=0.2)
    message_id = queue.send(b"x")
    assert queue.receive() is not None
    queue.extend(message_id, 60)
    time.sleep(0.3)  # past the visibility timeout, but extended
    assert queue.receive() is None
    timeout = _parse(_row(conn, message_id)["timeout"])
    assert timeout - datetime.now(timezone.utc) > timedelta(seconds=50)
    # goqite: the new timeout is now + delay, not old timeout + delay
    queue.extend(message_id, 0)
    again = queue.receive()
    assert again is not None and again.id == message_id and again.received == 2


def test_extend_can_hide_a_visible_message(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    message_id = queue.send(b"x")
    queue.extend(message_id, 60)
    assert queue.receive() is None
    assert queue.counts().in_flight == 1


def test_extend_of_an_unknown_id_is_a_no_op(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    queue.extend("m_" + "0" * 32, 10)
    assert len(queue) == 0


# ---------------------------------------------------------------- delete, dead messages


def test_delete_twice(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue()
    message_id = queue.send(b"x")
    assert queue.receive() is not None
    assert queue.delete(message_id) is True
    assert queue.delete(message_id) is False
    assert queue.delete("m_" + "f" * 32) is False
    assert len(queue) == 0
    assert queue.receive() is None


def test_max_receive_leaves_a_dead_message(conn: sqlite3.Connection, make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(visibility_timeout=0.2, max_receive=2)
    message_id = queue.send(b"x")
    assert queue.receive().received == 1  # type: ignore[union-attr]
    second = _receive_within(queue, 10)
    assert second is not None and second.received == 2
    time.sleep(0.3)  # past the second visibility timeout
    assert queue.receive() is None
    counts = queue.counts()
    assert (counts.total, counts.visible, counts.in_flight, counts.dead) == (1, 0, 0, 1)
    assert _row(conn, message_id)["received"] == 2  # dead messages stay in the table (goqite)
    assert len(queue) == 1
    assert queue.delete(message_id) is True
    assert queue.counts().dead == 0


def test_counts(make_queue: Callable[..., Queue]) -> None:
    queue = make_queue(max_receive=1)
    queue.send(b"visible")
    time.sleep(0.002)
    queue.send(b"delayed", delay=60)
    time.sleep(0.002)
    dead_id = queue.send(b"will die", priority=9)
    assert queue.receive().id == dead_id  # type: ignore[union-attr]
    queue.extend(dead_id, 0)  # received == max_receive and visible again: dead
    counts = queue.counts()
    assert (counts.total, counts.visible, counts.in_flight, counts.dead) == (3, 1, 1, 1)
    assert len(queue) == 3


# ---------------------------------------------------------------- compatibility with Go goqite


def _go_stamp(moment: datetime) -> str:
    """Go's "2006-01-02T15:04:05.000Z07:00" for a UTC time: how goqite (>= PR #68) writes timestamps."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_reads_a_message_a_go_service_wrote(conn: sqlite3.Connection, make_queue: Callable[..., Queue]) -> None:
    now = datetime.now(timezone.utc)
    conn.execute(
        "insert into goqite (queue, body, timeout, priority) values (?, ?, ?, ?)",
        ("quaero_jobs", b'{"id":"go"}', _go_stamp(now - timedelta(milliseconds=5)), 0),
    )
    message = make_queue().receive()
    assert message is not None and message.body == b'{"id":"go"}' and ID.match(message.id)


def test_a_go_receive_reads_what_we_sent(conn: sqlite3.Connection, make_queue: Callable[..., Queue]) -> None:
    message_id = make_queue().send(b"from python", priority=1)
    now = datetime.now(timezone.utc) + timedelta(milliseconds=5)
    rows = conn.execute(
        "update goqite set timeout = ?, received = received + 1 where id = ("
        "select id from goqite where queue = ? and ? >= timeout and received < ? "
        "order by priority desc, created limit 1) returning id, body",
        (_go_stamp(now + timedelta(seconds=5)), "quaero_jobs", _go_stamp(now), 3),
    ).fetchall()
    assert rows == [(message_id, b"from python")]
    assert make_queue().receive() is None  # the Go receive's timeout is honoured here too


# ---------------------------------------------------------------- receive is one atomic statement


def test_racing_receivers_never_share_a_message(path: Path, make_queue: Callable[..., Queue]) -> None:
    total, workers = 300, 6
    producer = make_queue(visibility_timeout=300)
    sent = {producer.send(f"{i}".encode()) for i in range(total)}
    barrier = threading.Barrier(workers)
    got: list[list[str]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def drain(index: int) -> None:
        conn = db.connect(path, Settings())
        queue = Queue(conn, "quaero_jobs", visibility_timeout=300, max_receive=3)
        try:
            barrier.wait(30)
            while (message := queue.receive()) is not None:
                got[index].append(message.id)
        except BaseException as exc:  # noqa: BLE001 - any failure in the thread is the test's  # pragma: no cover
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    everything = [message_id for ids in got for message_id in ids]
    assert len(everything) == total, "a message was received twice or not at all"
    assert set(everything) == sent
    assert sum(1 for ids in got if ids) >= 2, "only one thread ever received: no race took place"
    check = db.connect(path, Settings())
    try:
        assert check.execute("select count(*) from goqite where received != 1").fetchone()[0] == 0
    finally:
        check.close()
