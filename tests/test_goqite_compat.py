"""goqite tables that other goqite versions and other processes wrote, read through the plugin's queue.

* goqite before v0.4.0 (v0.1.0 to v0.3.1, the version Quaero pinned) made its table without
  the ``priority`` column and indexed ``(queue, created)``: the queue reads such a table as it
  is (priority 0, FIFO), and never alters it.
* goqite before v0.4.0 wrote ``timeout`` in the Go process's local time with its offset
  (``rfc3339Milli``: ``2026-12-03T11:00:00.000+01:00``): a message is visible when its UTC
  instant has passed, whatever offset it was written with.

Every table here is a real SQLite file made with goqite's own DDL; every row is written with
plain SQL, as a Go process would write it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pytest_quaero.core import db
from pytest_quaero.core.audit import audit
from pytest_quaero.core.queue import Queue, create_schema
from pytest_quaero.core.seed import prepare_database
from pytest_quaero.core.settings import Settings

#: goqite v0.3.1's schema.sql (tag v0.3.1, f54c7c1), verbatim: the same in every release before v0.4.0
V031_SCHEMA = """
create table goqite (
  id text primary key default ('m_' || lower(hex(randomblob(16)))),
  created text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  updated text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  queue text not null,
  body blob not null,
  timeout text not null default (strftime('%Y-%m-%dT%H:%M:%fZ')),
  received integer not null default 0
) strict;

create trigger goqite_updated_timestamp after update on goqite begin
  update goqite set updated = strftime('%Y-%m-%dT%H:%M:%fZ') where id = old.id;
end;

create index goqite_queue_created_idx on goqite (queue, created);
"""

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
FAST = ("--quaero-job-time=1ms", "--quaero-stagger=100ms", "--quaero-poll-interval=50ms")
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")


def v031_file(path: Path) -> Path:
    """A WAL database with goqite v0.3.1's table, as ``goqite.Setup`` left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("pragma journal_mode = wal")
        conn.executescript(V031_SCHEMA)
    finally:
        conn.close()
    return path


def schema_of(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(row) for row in conn.execute(
            "select type, name, sql from sqlite_master where tbl_name = 'goqite' order by type, name")]
    finally:
        conn.close()


def go_stamp(instant: datetime, offset_hours: float, sep: str = "T") -> str:
    """``instant`` as goqite before v0.4.0 wrote it in a process whose zone is UTC+offset_hours."""
    zone = timezone(timedelta(hours=offset_hours))
    return instant.astimezone(zone).isoformat(sep=sep, timespec="milliseconds")


@pytest.fixture(params=["v0.3.1", "head"])
def shape(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def qconn(tmp_path: Path, shape: str) -> Iterator[sqlite3.Connection]:
    """A connection (the plugin's pragmas) to a goqite table of either shape."""
    path = tmp_path / "goqite.db"
    if shape == "v0.3.1":
        v031_file(path)
    else:
        prepare_database(path, Settings())
    conn = db.connect(path, Settings())
    yield conn
    conn.close()


def insert(conn: sqlite3.Connection, body: bytes, timeout: str, received: int = 0, queue: str = "quaero_jobs") -> str:
    """A row as a Go goqite process writes it (its own timeout text, the table's defaults otherwise)."""
    return str(conn.execute("insert into goqite (queue, body, timeout, received) values (?, ?, ?, ?) returning id",
                            (queue, body, timeout, received)).fetchone()[0])


# ---------------------------------------------------------------- goqite before v0.4.0: no priority


def test_create_schema_leaves_a_v031_table_as_it_is(tmp_path: Path) -> None:
    path = v031_file(tmp_path / "v031.db")
    before = schema_of(path)
    conn = sqlite3.connect(path)
    try:
        create_schema(conn)  # was: sqlite3.OperationalError: no such column: priority
        create_schema(conn)
    finally:
        conn.close()
    assert schema_of(path) == before
    assert [name for kind, name, sql in before if kind == "index" and sql] == ["goqite_queue_created_idx"]


def test_a_v031_table_is_a_fifo_queue_with_priority_0(tmp_path: Path) -> None:
    path = v031_file(tmp_path / "v031.db")
    conn = db.connect(path, Settings())
    try:
        queue = Queue(conn, "quaero_jobs", visibility_timeout=5.0, max_receive=2)
        assert not queue.has_priority
        ids = [queue.send(body) for body in (b"a", b"b", b"c")]
        insert(conn, b"other queue", "2000-01-01T00:00:00.000Z", queue="other")
        received = [queue.receive() for _ in range(3)]
        assert [m.body for m in received if m] == [b"a", b"b", b"c"]
        assert [m.id for m in received if m] == ids
        assert queue.receive() is None
        counts = queue.counts()
        assert (counts.total, counts.visible, counts.in_flight, counts.dead) == (3, 0, 3, 0)
        queue.extend(ids[0], 0)  # visible again: its second and last delivery
        assert queue.receive().id == ids[0]  # type: ignore[union-attr]
        queue.extend(ids[0], 0)
        counts = queue.counts()
        assert (counts.total, counts.visible, counts.in_flight, counts.dead) == (3, 0, 2, 1)
        assert queue.delete(ids[1]) and len(queue) == 2
        with pytest.raises(ValueError, match="priority 5 cannot be stored: this goqite table has no priority column"):
            queue.send(b"urgent", priority=5)
    finally:
        conn.close()
    assert "priority" not in schema_of(path)[-1][2]  # the table: still v0.3.1's


def test_quaero_db_on_a_v031_database(pytester: pytest.Pytester) -> None:
    path = v031_file(pytester.path / "goqite-v031.db")
    before = schema_of(path)
    result = pytester.runpytest(*BASE, "--quaero-scenario=light", f"--quaero-db={path}", *FAST, *RELAXED)
    result.assert_outcomes(passed=10)  # was: 8 errors, "no such column: priority"
    assert schema_of(path) == before
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("select count(*) from crawl_jobs where status = 'completed'").fetchone()[0] == 105
        assert conn.execute("select count(*) from goqite").fetchone()[0] == 0
    finally:
        conn.close()


def test_receive_and_counts_use_the_tables_own_index(qconn: sqlite3.Connection, shape: str) -> None:
    """The statements the queue really runs (traced), planned on the table they run on."""
    index = "goqite_queue_created_idx" if shape == "v0.3.1" else "goqite_queue_priority_created_idx"
    queue = Queue(qconn)
    statements: list[str] = []
    qconn.set_trace_callback(statements.append)
    try:
        queue.receive()
        queue.counts()
    finally:
        qconn.set_trace_callback(None)
    receive, counts = (next(s for s in statements if s.lower().startswith(verb)) for verb in ("update", "select"))
    for statement in (receive, counts):
        plan = " ".join(str(row[3]) for row in qconn.execute(f"explain query plan {statement}"))
        assert f"USING INDEX {index} (queue=?)" in plan, plan
        assert "TEMP B-TREE" not in plan.upper(), plan  # the index gives the order: no sort
        assert "SCAN" not in plan.upper(), plan


# ---------------------------------------------------------------- timeouts written with a UTC offset


@pytest.mark.parametrize("sep", ["T", " "])
@pytest.mark.parametrize("offset", [+1, -5])
@pytest.mark.parametrize("minutes", [-30, +30])
def test_a_timeout_with_an_offset_is_its_utc_instant(qconn: sqlite3.Connection, offset: int, minutes: int,
                                                     sep: str) -> None:
    """30 minutes ago at +01:00 reads as 30 minutes ahead as text (invisible an hour too long);
    30 minutes ahead at -05:00 reads as 4.5 hours ago (visible early)."""
    instant = datetime.now(timezone.utc) + timedelta(minutes=minutes)
    message_id = insert(qconn, b"x", go_stamp(instant, offset, sep))
    queue = Queue(qconn)
    counts = queue.counts()
    due = minutes < 0
    assert (counts.visible, counts.in_flight) == ((1, 0) if due else (0, 1))
    message = queue.receive()
    assert (message.id if message else None) == (message_id if due else None)


def test_visible_exactly_when_the_utc_instant_passes(qconn: sqlite3.Connection) -> None:
    instant = datetime.now(timezone.utc) + timedelta(seconds=0.6)
    ids = {insert(qconn, f"{offset}".encode(), go_stamp(instant, offset)) for offset in (+1, -5, 0)}
    queue = Queue(qconn)
    assert queue.receive() is None
    got: set[str] = set()
    while len(got) < 3 and datetime.now(timezone.utc) < instant + timedelta(seconds=5):
        message = queue.receive()
        if message is None:
            time.sleep(0.01)
            continue
        seen = datetime.now(timezone.utc)
        assert seen >= instant - timedelta(milliseconds=2), (seen, instant)  # never before its instant
        got.add(message.id)
    assert got == ids
    assert datetime.now(timezone.utc) < instant + timedelta(seconds=2)  # and soon after it
    # the plugin's own writes stay in goqite's format: UTC, milliseconds, Z
    stamps = [row[0] for row in qconn.execute("select timeout from goqite")]
    assert all(len(s) == 24 and s.endswith("Z") and s[10] == "T" for s in stamps), stamps


def test_dead_and_in_flight_with_offsets(qconn: sqlite3.Connection) -> None:
    now = datetime.now(timezone.utc)
    insert(qconn, b"dead", go_stamp(now - timedelta(minutes=30), +1), received=3)  # text: 30 min ahead
    insert(qconn, b"last delivery running", go_stamp(now + timedelta(minutes=30), -5), received=3)  # text: past
    insert(qconn, b"in flight", go_stamp(now + timedelta(minutes=30), -5), received=1)
    insert(qconn, b"visible", go_stamp(now - timedelta(minutes=30), +1), received=1)
    queue = Queue(qconn, max_receive=3)
    counts = queue.counts()
    assert (counts.total, counts.visible, counts.in_flight, counts.dead) == (4, 1, 2, 1)
    message = queue.receive()
    assert message is not None and message.body == b"visible" and message.received == 2
    assert queue.receive() is None


# ---------------------------------------------------------------- audit


def test_audit_of_a_v031_database_written_outside_utc(tmp_path: Path) -> None:
    path = v031_file(tmp_path / "quaero.db")
    now = datetime.now(timezone.utc)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        insert(conn, b"dead", go_stamp(now - timedelta(minutes=30), +1), received=3)  # text: 30 min ahead
        insert(conn, b"last delivery running", go_stamp(now + timedelta(minutes=30), -5), received=3)
        insert(conn, b"waiting", go_stamp(now - timedelta(minutes=30), +1))
    finally:
        conn.close()
    before = path.read_bytes()
    found = audit(str(path), Settings(max_receive=3))
    assert found.verdicts["dead_messages"]["value"] == 1
    left = found.verdicts["messages_left"]
    assert left["value"] == 2
    assert left["detail"] == ("still deliverable: quaero_jobs 1; "
                              "in flight (visibility timeout running): quaero_jobs 1")
    assert path.read_bytes() == before
