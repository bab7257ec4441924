"""Where a PostgreSQL run happens: the embedded server, one schema per run, and bad DSNs said plainly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pg_support
import pytest
from pg_support import MISSING, needs_postgresql

from pytest_quaero.core.settings import Settings

pytestmark = needs_postgresql
pg_server = pg_support.pg_server  # the shared fixture

if MISSING is None:
    import psycopg

    from pytest_quaero.core.postgresql import stats
    from pytest_quaero.core.postgresql.connect import connect
    from pytest_quaero.core.postgresql.queue import PgQueue
    from pytest_quaero.core.postgresql.queue import create_schema as create_queue_schema
    from pytest_quaero.core.postgresql.server import (
        MIN_SERVER_VERSION,
        Server,
        ServerError,
        create_run_schema,
        server_for,
        shared_server,
    )
    from pytest_quaero.core.postgresql.store import PgJobStore
    from pytest_quaero.core.postgresql.store import create_schema as create_store_schema


def test_the_embedded_server_is_started_once_per_process(pg_server: Any) -> None:
    assert pg_server.embedded and pg_server.version_num >= MIN_SERVER_VERSION
    assert pg_server.startup_seconds > 0  # measured, from asking to the first answered query
    assert shared_server() is pg_server and server_for(None) is pg_server
    with psycopg.connect(pg_server.dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_each_run_gets_its_own_schema_and_drops_only_that(pg_server: Any) -> None:
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        # a team's own goqite table with messages, where the run's DSN points
        admin.execute("create table if not exists public.goqite (id text primary key, queue text)")
        admin.execute("insert into public.goqite values ('m_team', 'quaero_jobs') on conflict do nothing")
        first, second = create_run_schema(pg_server, "aaaa0001"), create_run_schema(pg_server, "aaaa0002")
        for schema in (first, second):
            with connect(schema.dsn, Settings()) as conn:
                create_queue_schema(conn)
                PgQueue(conn).send(schema.schema.encode())
        with connect(first.dsn, Settings()) as conn:
            assert [bytes(row[0]) for row in conn.execute("select body from goqite")] == [b"quaero_aaaa0001"]
        first.drop()
        schemas = {row[0] for row in admin.execute("select nspname from pg_namespace")}
        assert "quaero_aaaa0001" not in schemas and "quaero_aaaa0002" in schemas
        assert admin.execute("select count(*) from public.goqite").fetchone() == (1,)  # never touched
        second.drop()
        admin.execute("drop table public.goqite")


def test_a_schema_the_run_did_not_create_is_refused_and_kept(pg_server: Any) -> None:
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        admin.execute("create schema quaero_bbbb0001")
        admin.execute("create table quaero_bbbb0001.keep (x int)")
        try:
            with pytest.raises(ServerError, match="already exists; the run does not reuse"):
                create_run_schema(pg_server, "bbbb0001")
            assert admin.execute("select to_regclass('quaero_bbbb0001.keep') is not null").fetchone() == (True,)
        finally:
            admin.execute("drop schema quaero_bbbb0001 cascade")


def test_a_role_without_create_is_told_what_to_grant(pg_server: Any) -> None:
    role = "quaero_reader"
    with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
        admin.execute(f"drop role if exists {role}")
        admin.execute(f"create role {role} login")
        try:
            dsn = psycopg.conninfo.make_conninfo(pg_server.dsn, user=role)
            # checked before the run: the grant that fixes it, named
            with pytest.raises(ServerError, match=r"role 'quaero_reader' may not create a schema .*GRANT CREATE ON "
                                                  r"DATABASE \w+ TO quaero_reader"):
                server_for(dsn)
            # and should the grant be revoked between the check and the run, the schema's creation says so too
            unchecked = Server(dsn, False, 0.0, pg_server.version, pg_server.version_num)
            with pytest.raises(ServerError, match=r"may not create a schema.*grant it CREATE on the database"):
                create_run_schema(unchecked, "cccc0001")
        finally:
            admin.execute(f"drop role {role}")


def test_an_unreachable_dsn_is_one_sentence_without_the_password(tmp_path: Any) -> None:
    dsn = f"postgresql://quaero:s3cret@/jobs?host={tmp_path}&connect_timeout=2"
    with pytest.raises(ServerError, match="cannot connect") as raised:
        server_for(dsn)
    assert "s3cret" not in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_database_is_named(pg_server: Any) -> None:
    with pytest.raises(ServerError, match="create the database first"):
        server_for(psycopg.conninfo.make_conninfo(pg_server.dsn, dbname="no_such_database"))


def test_server_counters_are_exact_for_the_runs_tables(pg_server: Any) -> None:
    schema = create_run_schema(pg_server, "dddd0001")
    try:
        with connect(schema.dsn, Settings()) as conn:
            create_queue_schema(conn)
            create_store_schema(conn)
        with psycopg.connect(pg_server.dsn, autocommit=True) as admin:
            before = stats.snapshot(admin, schema.schema)
            with connect(schema.dsn, Settings()) as conn:
                store, queue = PgJobStore(conn), PgQueue(conn)
                store.save_parent("p", "Crawl", 3)
                for child in ("c1", "c2", "c3"):
                    store.create_child(child, "p", "u", enqueue=lambda: queue.send(b"{}"))
                for child in ("c1", "c2", "c3"):
                    message = queue.receive()
                    assert message is not None
                    store.finish_child(child, "p")
                    queue.delete(message.id)
            assert stats.settle(admin, schema.application_name) == 0
            delta = stats.delta(before, stats.snapshot(admin, schema.schema), jobs=3)
    finally:
        schema.drop()
    # 1 parent + 3 children; 3 messages sent, claimed (updated) and deleted; 3 children + 3 parent updates
    assert delta["tables"]["crawl_jobs"]["rows_inserted"] == 4
    assert delta["tables"]["crawl_jobs"]["rows_updated"] == 6
    assert delta["tables"]["goqite"] == {**delta["tables"]["goqite"], "rows_inserted": 3, "rows_updated": 3,
                                         "rows_deleted": 3}
    assert delta["rows_per_job"]["rows_deleted"] == 1.0
    assert delta["database"]["deadlocks"] == 0


_STARTS_AND_FORGETS = """
import sys
before = set(sys.modules)
from pytest_quaero.core.postgresql.server import shared_server
print(shared_server()._pid, flush=True)
# what pytester's in-process runs do on the way out: modules first imported during the run are dropped
for name in set(sys.modules) - before:
    del sys.modules[name]
"""


def test_the_embedded_server_is_stopped_at_exit_even_when_its_modules_are_gone(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _STARTS_AND_FORGETS], capture_output=True, text=True, timeout=120,
                          check=True)
    pid = int(done.stdout.split()[0])
    assert not os.path.exists(f"/proc/{pid}") or b"postgres" not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_a_server_older_than_13_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_quaero.core.postgresql import server

    # what an old server answers (and its role may create schemas: the version is what is refused)
    monkeypatch.setattr(server, "_facts", lambda dsn: ("12.19", 120019, True, "quaero", "jobs"))
    with pytest.raises(ServerError, match=r"PostgreSQL 12\.19 is older than the oldest supported \(13"):
        server_for("postgresql://quaero@db.example/jobs")
