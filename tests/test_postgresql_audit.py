"""``--quaero-audit=postgresql://...``: the audit's criteria on a goqite PostgreSQL database, read-only.

The databases are schemas on the session's embedded server (``pg_support``), written by real
connections; the audit runs through pytester with the DSN on its command line. Every DSN carries
a password (the server trusts local connections, so it is never checked) only so that the tests
can see it never reaches an item name or the output.
"""

from __future__ import annotations

import secrets
import sys
import urllib.parse
from typing import Any

import pg_support
import pytest
from pg_support import INSTALL_HINT, MISSING, needs_postgresql

from pytest_quaero.core.audit import AUDIT_CRITERIA

pg_server, pg_schema = pg_support.pg_server, pg_support.pg_schema  # the shared fixtures

if MISSING is None:
    import psycopg
    from psycopg import conninfo

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
KEYS = [key for key, _ in AUDIT_CRITERIA]
SQLITE_ONLY = ("wal_checkpoint", "sqlite_integrity")
PASSWORD = "pw-" + secrets.token_hex(6)


def uri_with_password(schema: Any) -> str:
    """The schema's DSN as a ``postgresql://user:password@...`` URI; the search_path rides in ``options``."""
    parts = conninfo.conninfo_to_dict(schema.dsn)
    query = urllib.parse.urlencode({"host": parts["host"], "options": parts["options"]},
                                   quote_via=urllib.parse.quote)
    return f"postgresql://{parts['user']}:{PASSWORD}@/{parts['dbname']}?{query}"


def keywords_with_password(schema: Any) -> str:
    return conninfo.make_conninfo(schema.dsn, password=PASSWORD)


def populate(schema: Any, *, leftover: bool) -> None:
    """Two parents whose counters agree with their children; ``leftover``: a message and an orphan too."""
    with psycopg.connect(schema.dsn, autocommit=True) as conn:
        conn.execute("insert into crawl_jobs (id, status, total_urls, completed_urls, failed_urls, pending_urls) "
                     "values ('p1', 'completed', 2, 1, 1, 0), ('p2', 'running', 1, 0, 0, 1)")
        conn.execute("insert into crawl_jobs (id, parent_id, job_type, status) values "
                     "('c1', 'p1', 'crawler_url', 'completed'), ('c2', 'p1', 'crawler_url', 'failed'), "
                     "('c3', 'p2', 'crawler_url', 'pending')")
        if leftover:
            conn.execute("insert into goqite (queue, body) values ('quaero_jobs', '\\x7b7d')")
            conn.execute("insert into crawl_jobs (id, parent_id, job_type) values ('c9', 'gone', 'crawler_url')")


def snapshot(schema: Any) -> list[tuple[Any, ...]]:
    """Every row with its xmin and ctid: any insert, update or delete by the audit changes this."""
    with psycopg.connect(schema.dsn, autocommit=True) as conn:
        return [("goqite", *row) for row in conn.execute(
            "select xmin::text, ctid::text, id, received, timeout from goqite order by id").fetchall()] + [
            ("crawl_jobs", *row) for row in conn.execute(
                "select xmin::text, ctid::text, id, status, pending_urls from crawl_jobs order by id").fetchall()]


def run_audit(pytester: pytest.Pytester, dsn: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE, f"--quaero-audit={dsn}", "-v", "-rA")


@needs_postgresql
def test_a_clean_database_passes_every_criterion_and_is_not_written(pytester: pytest.Pytester,
                                                                     pg_schema: Any) -> None:
    populate(pg_schema, leftover=False)
    before = snapshot(pg_schema)
    dsn = uri_with_password(pg_schema)
    result = run_audit(pytester, dsn)
    # the five criteria that apply pass; the two SQLite-only ones are skipped with their reason
    result.assert_outcomes(passed=len(KEYS) - 2, failed=0, skipped=2)
    label = f"postgresql://postgres:***@/postgres?{dsn.split('?', 1)[1]}"
    result.stdout.fnmatch_lines([f"quaero-audit[[]{label}[]]::{key} PASSED*"
                                 for key in KEYS if key not in SQLITE_ONLY], consecutive=False)
    result.stdout.fnmatch_lines(["*= quaero audit =*",
                                 "*REPEATABLE READ READ ONLY transaction, default_transaction_read_only=on*",
                                 "  Messages Left in the Queue*PASS  measured 0*",
                                 "  Parent Progress vs Child Statuses*PASS  measured 2/2 parents agree*",
                                 "  WAL Checkpoint State*SKIP  SQLite only*",
                                 "SKIPPED *SQLite only: quick_check is replaced by nothing*"], consecutive=False)
    out = result.stdout.str() + result.stderr.str()
    assert PASSWORD not in out
    assert snapshot(pg_schema) == before


@needs_postgresql
def test_a_leftover_message_and_an_orphan_fail_exactly_those_items(pytester: pytest.Pytester,
                                                                   pg_schema: Any) -> None:
    populate(pg_schema, leftover=True)
    before = snapshot(pg_schema)
    result = run_audit(pytester, keywords_with_password(pg_schema))
    result.assert_outcomes(passed=3, failed=2, skipped=2)
    out = result.stdout.str()
    failed = sorted(line.split("::")[1].split()[0] for line in out.splitlines() if line.startswith("FAILED "))
    assert failed == ["messages_left", "orphans"]
    assert "Messages Left in the Queue: measured 1, required = 0 (still deliverable: quaero_jobs 1)" in out
    assert "Orphaned Children: measured 1, required = 0 (e.g. c9 -> missing gone)" in out
    assert "password=***" in out and PASSWORD not in out + result.stderr.str()
    assert snapshot(pg_schema) == before


@needs_postgresql
def test_the_audit_connection_refuses_to_write(pg_schema: Any) -> None:
    """The guard under the audit's queries: a write on its connection fails (SQLSTATE 25006)."""
    from pytest_quaero.core.postgresql.audit import connect_readonly

    conn = connect_readonly(keywords_with_password(pg_schema))
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("insert into goqite (queue, body) values ('q', '\\x00')")
    finally:
        conn.close()
    assert snapshot(pg_schema) == []


@needs_postgresql
def test_an_unreachable_server_is_one_clear_usage_error(pytester: pytest.Pytester) -> None:
    # port 1 on the loopback: refused at once, no server listens there
    dsn = f"postgresql://auditor:{PASSWORD}@127.0.0.1:1/service"
    result = run_audit(pytester, dsn)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, errors
    assert errors[0].startswith("ERROR: --quaero-audit=postgresql://auditor:***@127.0.0.1:1/service: cannot connect (")
    assert errors[0].endswith("; check the host, port, database and password, and that the server is running.")
    assert PASSWORD not in result.stdout.str() + result.stderr.str()


@needs_postgresql
def test_a_schema_without_the_tables_is_a_usage_error(pytester: pytest.Pytester, pg_server: Any) -> None:
    from pytest_quaero.core.postgresql.server import create_run_schema

    empty = create_run_schema(pg_server, secrets.token_hex(4))
    try:
        result = run_audit(pytester, keywords_with_password(empty))
    finally:
        empty.drop()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --quaero-audit=*password=****: has neither a goqite table nor a "
                                 f"crawl_jobs table on the search_path ({empty.schema})*"])


def test_without_the_extra_the_audit_is_a_usage_error_naming_the_install(pytester: pytest.Pytester,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed: find_spec and import both refuse
    result = run_audit(pytester, f"host=db.example dbname=service user=svc password={PASSWORD}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --quaero-audit=host=db.example dbname=service user=svc password=***: "
                                 f"auditing PostgreSQL needs the postgresql extra: psycopg is not installed; "
                                 f"run: {INSTALL_HINT}."])
    assert PASSWORD not in result.stdout.str() + result.stderr.str()
