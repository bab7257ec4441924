"""PostgreSQL connections: session settings set and read back, statements observed, lock errors
classified by SQLSTATE, each error produced for real on the embedded server."""

from __future__ import annotations

import threading
from typing import Any

import pg_support
import pytest
from pg_support import MISSING, needs_postgresql

from pytest_quaero.core.instruments import instrumenting, operation
from pytest_quaero.core.settings import Settings

pytestmark = needs_postgresql
pg_server, pg_schema = pg_support.pg_server, pg_support.pg_schema  # the shared fixtures

if MISSING is None:  # the extra is installed: import what the tests use
    import psycopg

    from pytest_quaero.core.postgresql.connect import connect, read_session, transaction
    from pytest_quaero.core.postgresql.errors import lock_error_name, sqlstate
    from pytest_quaero.core.postgresql.server import redact


def _with_options(dsn: str, options: str) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    return psycopg.conninfo.make_conninfo(dsn, options=f"{parts.get('options', '')} {options}".strip())


def test_session_settings_are_set_and_read_back(pg_schema: Any) -> None:
    conn = connect(pg_schema.dsn, Settings(busy_timeout_ms=2500, synchronous="FULL"))
    session = read_session(conn)
    conn.close()
    assert session.lock_timeout_ms == 2500  # the busy timeout is PostgreSQL's lock_timeout
    assert session.synchronous_commit == "on"
    assert session.isolation == "READ COMMITTED"
    assert session.search_path == pg_schema.schema  # the DSN lands in the run's schema
    conn = connect(pg_schema.dsn, Settings(synchronous="NORMAL"))
    assert read_session(conn).synchronous_commit == "off"
    conn.close()


def test_isolation_and_statement_timeout_come_from_the_dsn(pg_schema: Any) -> None:
    dsn = _with_options(pg_schema.dsn, "-c default_transaction_isolation=serializable -c statement_timeout=1500")
    conn = connect(dsn, Settings())
    session = read_session(conn)
    conn.close()
    assert (session.isolation, session.statement_timeout_ms) == ("SERIALIZABLE", 1500)
    assert session.search_path == pg_schema.schema  # the DSN's own options are kept beside the run's


def test_statements_transactions_and_holds_are_observed(pg_schema: Any) -> None:
    with instrumenting() as instruments:
        conn = connect(pg_schema.dsn, Settings())
        with operation("save_job"):
            conn.execute("insert into crawl_jobs (id) values ('a'), ('b')")  # autocommit write
            with transaction(conn):
                conn.execute("select status from crawl_jobs where id = 'a' for update")
                conn.execute("update crawl_jobs set status = 'running' where id in ('a', 'b')")
        with operation("handler"):
            conn.execute("select count(*) from crawl_jobs").fetchone()
        conn.close()
    summary = instruments.summary()["operations"]
    save = summary["save_job"]
    assert save["statements"] == {"insert": 1, "begin": 1, "select": 1, "update": 1, "commit": 1}
    assert (save["autocommit_writes"], save["write_transactions"], save["rows_changed"]) == (1, 1, 4)
    assert save["hold_ms"]["samples"] == 1
    assert summary["handler"]["statements"] == {"select": 1}
    assert summary["handler"]["write_transactions"] == 0  # a plain read holds no row lock


def test_a_rolled_back_transaction_is_counted(pg_schema: Any) -> None:
    with instrumenting() as instruments:
        conn = connect(pg_schema.dsn, Settings())
        with operation("save_job"), pytest.raises(psycopg.errors.UniqueViolation), transaction(conn):
            conn.execute("insert into crawl_jobs (id) values ('x')")
            conn.execute("insert into crawl_jobs (id) values ('x')")
        conn.close()
    save = instruments.summary()["operations"]["save_job"]
    assert save["rollbacks"] == 1
    assert save["busy_errors"] == 0  # a unique violation is a bug, not a lock error


def _hold_row(dsn: str, row: str, ready: threading.Event, release: threading.Event) -> None:
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("begin")
        other.execute("select 1 from crawl_jobs where id = %s for update", (row,))
        ready.set()
        release.wait(10)
        other.execute("rollback")


@pytest.fixture
def held_row(pg_schema: Any) -> Any:
    """Row 'held' of crawl_jobs, locked FOR UPDATE by another connection for the test's length."""
    with psycopg.connect(pg_schema.dsn, autocommit=True) as conn:
        conn.execute("insert into crawl_jobs (id) values ('held')")
    ready, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=_hold_row, args=(pg_schema.dsn, "held", ready, release))
    thread.start()
    assert ready.wait(10)
    yield pg_schema
    release.set()
    thread.join(10)


def test_lock_timeout_is_55P03_counted_where_it_was_raised(held_row: Any) -> None:
    with instrumenting() as instruments:
        conn = connect(held_row.dsn, Settings(busy_timeout_ms=50))
        with operation("progress_update"), pytest.raises(psycopg.errors.LockNotAvailable) as raised:
            conn.execute("update crawl_jobs set status = 'x' where id = 'held'")
        conn.close()
    assert lock_error_name(raised.value) == "55P03 lock_not_available"
    assert instruments.summary()["operations"]["progress_update"]["busy_codes"] == {"55P03 lock_not_available": 1}


def test_nowait_is_55P03_too(held_row: Any) -> None:
    conn = connect(held_row.dsn, Settings())
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("select 1 from crawl_jobs where id = 'held' for update nowait")
    conn.close()
    assert sqlstate(raised.value) == "55P03"


def test_statement_timeout_is_57014(held_row: Any) -> None:
    conn = connect(_with_options(held_row.dsn, "-c statement_timeout=50"), Settings())
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("update crawl_jobs set status = 'x' where id = 'held'")
    conn.close()
    assert lock_error_name(raised.value) == "57014 query_canceled"


def test_serialization_failure_is_40001(pg_schema: Any) -> None:
    dsn = _with_options(pg_schema.dsn, "-c default_transaction_isolation=serializable")
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("insert into crawl_jobs (id, total_urls) values ('s', 0)")
    first, second = psycopg.connect(dsn, autocommit=True), psycopg.connect(dsn, autocommit=True)
    try:
        for conn in (first, second):
            conn.execute("begin")
            conn.execute("select total_urls from crawl_jobs where id = 's'").fetchone()
        first.execute("update crawl_jobs set total_urls = total_urls + 1 where id = 's'")
        first.execute("commit")
        with pytest.raises(psycopg.Error) as raised:
            second.execute("update crawl_jobs set total_urls = total_urls + 1 where id = 's'")
    finally:
        first.close()
        second.close()
    assert lock_error_name(raised.value) == "40001 serialization_failure"


def test_deadlock_is_40P01(pg_schema: Any) -> None:
    with psycopg.connect(pg_schema.dsn, autocommit=True) as setup:
        setup.execute("insert into crawl_jobs (id) values ('p'), ('c')")
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def update(first: str, then: str) -> None:
        with psycopg.connect(pg_schema.dsn, autocommit=True) as conn:
            conn.execute("begin")
            conn.execute("update crawl_jobs set status = 'x' where id = %s", (first,))
            barrier.wait(10)
            try:
                conn.execute("update crawl_jobs set status = 'x' where id = %s", (then,))
            except psycopg.Error as exc:
                errors.append(exc)
            conn.execute("rollback")

    threads = [threading.Thread(target=update, args=order) for order in (("p", "c"), ("c", "p"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [lock_error_name(exc) for exc in errors] == ["40P01 deadlock_detected"]


def test_too_many_connections_is_53300_though_psycopg_gives_no_sqlstate(pg_server: Any) -> None:
    role = "quaero_one_connection"
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        admin.execute(f"drop role if exists {role}")
        admin.execute(f"create role {role} login connection limit 1")
        try:
            dsn = psycopg.conninfo.make_conninfo(pg_server.dsn, user=role)
            with psycopg.connect(dsn), pytest.raises(psycopg.OperationalError) as raised:
                psycopg.connect(dsn)
        finally:
            admin.execute(f"drop role {role}")
    assert lock_error_name(raised.value) == "53300 too_many_connections"


def test_errors_of_other_libraries_are_not_postgresql_errors() -> None:
    assert sqlstate(ValueError("40001")) is None
    assert lock_error_name(RuntimeError("deadlock detected")) is None


def test_redact_hides_the_password() -> None:
    shown = redact("postgresql://quaero:s3cret@db.example:5433/jobs")
    assert "s3cret" not in shown and "***" in shown and "db.example" in shown
