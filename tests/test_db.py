"""db: pragmas applied per connection and read back; journal mode set once; verify is strict."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pytest_quaero.core import db
from pytest_quaero.core.settings import Settings


def _settings(**changes: object) -> Settings:
    return Settings().replace(source="test", **changes)


def test_connect_applies_every_pragma(tmp_path: Path) -> None:
    settings = _settings(busy_timeout_ms=1234, synchronous="FULL", cache_size_mb=8)
    conn = db.connect(tmp_path / "a.db", settings)
    try:
        pragmas = db.read_pragmas(conn)
    finally:
        conn.close()
    assert pragmas.busy_timeout_ms == 1234
    assert pragmas.synchronous == "FULL"
    assert pragmas.cache_size_kib == 8 * 1024
    assert pragmas.sqlite_version == sqlite3.sqlite_version
    assert pragmas.as_dict()["busy_timeout_ms"] == 1234


def test_pragmas_are_per_connection(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    first = db.connect(path, _settings(busy_timeout_ms=111, synchronous="OFF", cache_size_mb=2))
    second = db.connect(path, _settings(busy_timeout_ms=222, synchronous="EXTRA", cache_size_mb=3))
    plain = sqlite3.connect(str(path), timeout=0)
    try:
        one, two = db.read_pragmas(first), db.read_pragmas(second)
        assert (one.busy_timeout_ms, one.synchronous, one.cache_size_kib) == (111, "OFF", 2048)
        assert (two.busy_timeout_ms, two.synchronous, two.cache_size_kib) == (222, "EXTRA", 3072)
        # a connection opened behind connect()'s back has none of them: why there is one place to open
        assert int(plain.execute("PRAGMA busy_timeout").fetchone()[0]) == 0
    finally:
        first.close()
        second.close()
        plain.close()


def test_connect_leaves_transactions_to_the_caller(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "a.db", Settings())
    try:
        assert conn.isolation_level is None
        conn.execute("create table t (x)")
        conn.execute("insert into t values (1)")
        assert not conn.in_transaction  # autocommit: no implicit deferred BEGIN
    finally:
        conn.close()


def test_busy_timeout_really_waits(tmp_path: Path) -> None:
    """The pragma is not just stored: a writer meeting a held lock waits for it instead of failing."""
    import threading
    import time

    path = tmp_path / "a.db"
    db.prepare(path, Settings())
    locked = threading.Event()
    released_at: list[float] = []

    def hold() -> None:
        holder = db.connect(path, Settings())
        holder.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(0.3)
        released_at.append(time.monotonic())
        holder.rollback()
        holder.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(10)
    waiter = db.connect(path, _settings(busy_timeout_ms=30_000))
    try:
        waiter.execute("BEGIN IMMEDIATE")  # with busy_timeout 0 this raises "database is locked"
        acquired_at = time.monotonic()
        waiter.rollback()
    finally:
        thread.join()
        waiter.close()
    assert acquired_at >= released_at[0]


def test_prepare_sets_wal_persistently(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    pragmas = db.prepare(path, Settings())
    assert pragmas.journal_mode == "wal"
    plain = sqlite3.connect(str(path))
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        plain.close()


def test_prepare_without_wal(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    assert db.prepare(path, _settings(wal=False)).journal_mode == "delete"
    # and back: a WAL file switched to rollback-journal mode when the settings say so
    db.prepare(path, Settings())
    assert db.prepare(path, _settings(wal=False)).journal_mode == "delete"


def test_prepare_sets_the_journal_mode_only_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statements: list[str] = []
    real_connect = db.connect

    def traced(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr(db, "connect", traced)
    path = tmp_path / "a.db"
    db.prepare(path, Settings())
    first = [s for s in statements if "journal_mode" in s and "=" in s]
    statements.clear()
    db.prepare(path, Settings())
    second = [s for s in statements if "journal_mode" in s and "=" in s]
    assert first == ["PRAGMA journal_mode = wal"]
    assert second == []


def test_prepare_on_a_wal_file_does_not_fight_a_writer(tmp_path: Path) -> None:
    """A second prepare (journal already WAL) needs no lock, even with busy_timeout 0."""
    path = tmp_path / "a.db"
    db.prepare(path, Settings())
    holder = db.connect(path, Settings())
    holder.execute("create table t (x)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("insert into t values (1)")
    try:
        assert db.prepare(path, _settings(busy_timeout_ms=0)).journal_mode == "wal"
    finally:
        holder.rollback()
        holder.close()


def test_verify_passes_on_a_matching_connection(tmp_path: Path) -> None:
    settings = _settings(busy_timeout_ms=500, cache_size_mb=4, synchronous="NORMAL")
    path = tmp_path / "a.db"
    db.prepare(path, settings)
    conn = db.connect(path, settings)
    try:
        pragmas = db.verify(conn, settings)
    finally:
        conn.close()
    assert (pragmas.journal_mode, pragmas.busy_timeout_ms, pragmas.cache_size_kib) == ("wal", 500, 4096)


@pytest.mark.parametrize(
    ("opened_with", "checked_with", "field"),
    [
        ({"busy_timeout_ms": 100}, {"busy_timeout_ms": 200}, "busy_timeout_ms"),
        ({"synchronous": "FULL"}, {"synchronous": "NORMAL"}, "synchronous"),
        ({"cache_size_mb": 2}, {"cache_size_mb": 64}, "cache_size_kib"),
        ({}, {"wal": False}, "journal_mode"),
    ],
)
def test_verify_raises_on_mismatch(
    tmp_path: Path, opened_with: dict[str, object], checked_with: dict[str, object], field: str
) -> None:
    path = tmp_path / "a.db"
    db.prepare(path, _settings(**opened_with))
    conn = db.connect(path, _settings(**opened_with))
    try:
        with pytest.raises(db.DatabaseError) as info:
            db.verify(conn, _settings(**checked_with))
    finally:
        conn.close()
    message = str(info.value)
    assert str(path) in message
    assert field in message
    assert "settings want" in message


def test_verify_catches_a_file_not_in_wal(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    sqlite3.connect(str(path)).close()  # a plain rollback-journal file
    conn = db.connect(path, Settings())
    try:
        with pytest.raises(db.DatabaseError, match="journal_mode is 'delete', settings want 'wal'"):
            db.verify(conn, Settings())
    finally:
        conn.close()


def test_read_only_connection_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db.prepare(path, Settings())
    writer = db.connect(path, Settings())
    writer.execute("create table t (x)")
    writer.close()
    reader = db.connect(path, Settings(), read_only=True)
    try:
        assert db.read_pragmas(reader).busy_timeout_ms == 10_000
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("insert into t values (1)")
    finally:
        reader.close()
