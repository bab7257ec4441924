"""``pytest --quaero-audit=postgresql://...``: the audit's criteria on a goqite PostgreSQL database.

The same criteria as :mod:`pytest_quaero.core.audit` judges on an SQLite file, where they
apply: messages left, dead messages, orphaned children, children per parent, parent progress
against child statuses. The SQLite-only ones are skipped, with the reason on the item: a WAL
left behind is SQLite's, and ``quick_check`` is replaced by nothing (PostgreSQL's core has no
read-only equivalent; ``amcheck`` is an extension the audited database may not have).

Never writes. The connection carries ``default_transaction_read_only=on`` (so even a statement
this module did not mean to write fails), and every query runs in one ``REPEATABLE READ READ
ONLY`` transaction: one snapshot, so a service still running cannot move rows between two
queries. The transaction is rolled back. The tables are found through the ``search_path`` the
DSN sets (its ``options``, or ``PGOPTIONS``), as goqite and the service would find them.

The password never leaves this module: messages, the result's ``path`` and its item names
show the DSN through :func:`~pytest_quaero.core.postgresql.redact_dsn`.

psycopg is imported inside the functions: this module is imported to *say* the extra is
missing, which it must do without it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pytest_quaero.core.audit_rules import (
    AuditResult,
    judge_orphans,
    judge_parents,
    judge_queues,
    progress_columns,
    record_tree,
)
from pytest_quaero.core.postgresql import missing_extra, redact_dsn

if TYPE_CHECKING:
    import psycopg

    from pytest_quaero.core.settings import Settings

__all__ = ["SQLITE_ONLY", "AuditError", "audit_postgresql", "check_postgresql", "connect_readonly"]

#: seconds to wait for the server; an audit of an unreachable server is one clear error, soon
CONNECT_TIMEOUT_S = 10

#: the criteria that are SQLite's own, and why each is not judged here
SQLITE_ONLY = {
    "wal_checkpoint": "SQLite only: a PostgreSQL server checkpoints its WAL itself; not judged",
    "sqlite_integrity": "SQLite only: quick_check is replaced by nothing on PostgreSQL (no read-only "
                        "equivalent in core; amcheck is an extension); not judged",
}
_NEEDS = {"messages_left": "goqite", "dead_messages": "goqite", "orphans": "crawl_jobs",
          "children_per_parent": "crawl_jobs", "parent_progress": "crawl_jobs"}
_IS_PARENT = "({0}parent_id is null or {0}parent_id = '')"


class AuditError(ValueError):
    """The database cannot be audited; :mod:`pytest_quaero.core.audit` raises it as its own AuditError.

    Its own class, not that module's: that module imports this one (deferred), so this one cannot import it.
    """


def _label(dsn: str, where: str) -> str:
    return f"{where}={redact_dsn(dsn)}"


def _readonly_conninfo(dsn: str) -> str:
    import psycopg
    from psycopg import conninfo

    try:
        given = conninfo.conninfo_to_dict(dsn).get("options") or os.environ.get("PGOPTIONS", "")
    except psycopg.Error as exc:  # psycopg.ProgrammingError; its text may quote the DSN, so it is not shown
        raise AuditError(f"cannot be parsed as a PostgreSQL DSN ({type(exc).__name__})") from None
    # kept: the DSN's own options (its search_path among them) come first, read-only is added to them
    options = f"{given} -c default_transaction_read_only=on".strip()
    return conninfo.make_conninfo(dsn, options=options, application_name="pytest-quaero-audit")


def _reason(dsn: str, exc: BaseException) -> str:
    # psycopg's message may echo the conninfo; any password in it is redacted the same way
    text = " ".join(str(exc).split())
    password = _password(dsn)
    if password:
        text = text.replace(password, "***")
    return redact_dsn(text)


def _password(dsn: str) -> str | None:
    import psycopg
    from psycopg import conninfo

    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
        return str(password) if password else None
    except psycopg.Error:
        return None


def connect_readonly(dsn: str, where: str = "--quaero-audit") -> psycopg.Connection[Any]:
    """A connection whose every transaction is read-only; :class:`AuditError` if there is none."""
    missing = missing_extra(embedded=False)
    if missing is not None:
        raise AuditError(f"{_label(dsn, where)}: auditing PostgreSQL needs the postgresql extra: {missing}.")
    import psycopg

    try:
        info = _readonly_conninfo(dsn)
    except AuditError as exc:
        raise AuditError(f"{_label(dsn, where)}: {exc}; allowed: a URI postgresql://user:password@host:port/"
                         "database or key=value pairs (host=... dbname=...).") from None
    try:
        conn = psycopg.connect(info, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise AuditError(f"{_label(dsn, where)}: cannot connect ({_reason(dsn, exc)}); check the host, port, "
                         "database and password, and that the server is running.") from None
    row = conn.execute("show default_transaction_read_only").fetchone()
    if row is None or row[0] != "on":  # a pooler that drops startup options: refuse rather than risk a write
        conn.close()
        raise AuditError(f"{_label(dsn, where)}: the server did not take default_transaction_read_only=on "
                         "(a connection pooler that drops startup options?); audit the server directly.")
    return conn


def _tables(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """goqite and crawl_jobs as the search_path finds them: name -> the name PostgreSQL shows."""
    row = conn.execute("select to_regclass('goqite')::text, to_regclass('crawl_jobs')::text").fetchone()
    assert row is not None
    return {name: shown for name, shown in zip(("goqite", "crawl_jobs"), row, strict=True) if shown}


def _search_path(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("show search_path").fetchone()
    return str(row[0]) if row else ""


def check_postgresql(dsn: str, where: str = "--quaero-audit") -> None:
    """Usage checks up front: the extra, the server reachable, a goqite or crawl_jobs table found."""
    conn = connect_readonly(dsn, where)
    import psycopg

    try:
        found, path = _tables(conn), _search_path(conn)
    except psycopg.Error as exc:
        raise AuditError(f"{_label(dsn, where)}: cannot be read ({_reason(dsn, exc)}).") from None
    finally:
        conn.close()
    if not found:
        raise AuditError(f"{_label(dsn, where)}: has neither a goqite table nor a crawl_jobs table on the "
                         f"search_path ({path}); audit needs at least one of them (set the schema with "
                         "options=-csearch_path=... in the DSN).")


def audit_postgresql(dsn: str, settings: Settings) -> AuditResult:
    """Run every audit query in one read-only snapshot and judge each criterion."""
    conn = connect_readonly(dsn)
    import psycopg

    try:
        conn.execute("begin isolation level repeatable read read only")
        found = _tables(conn)
        result = AuditResult(path=redact_dsn(dsn), opened="", tables=sorted(found.values()))
        row = conn.execute("select current_setting('server_version'), current_database(), "
                           "current_setting('search_path')").fetchone()
        assert row is not None
        result.opened = (f"PostgreSQL {row[0]}, database {row[1]}, search_path {row[2]}: one REPEATABLE READ "
                         "READ ONLY transaction, default_transaction_read_only=on, rolled back")
        result.facts["backend"] = "postgresql"
        if "goqite" in found:
            _audit_queue(conn, settings.max_receive, result)
        if "crawl_jobs" in found:
            _audit_jobs(conn, result)
        conn.execute("rollback")
    except psycopg.Error as exc:
        raise AuditError(f"{_label(dsn, '--quaero-audit')}: an audit query failed ({_reason(dsn, exc)}).") from None
    finally:
        conn.close()
    result.skipped.update(SQLITE_ONLY)
    for key, table in _NEEDS.items():
        if key not in result.verdicts and key not in result.skipped:
            result.skipped[key] = f"no {table} table on the search_path"
    return result


def _audit_queue(conn: psycopg.Connection[Any], max_receive: int, result: AuditResult) -> None:
    # goqite's rule for dead, as on SQLite: received max_receive times AND the visibility timeout
    # over. now() is the transaction's start: one instant for every row.
    due = "now() >= timeout"
    rows = conn.execute(
        f"select queue, count(*), count(*) filter (where not {due}), "
        f"count(*) filter (where received >= %s and {due}) from goqite group by queue order by queue",
        (max_receive,)).fetchall()
    per_queue = {str(q): {"messages": int(n), "in_flight": int(f), "dead": int(d)} for q, n, f, d in rows}
    judge_queues(per_queue, max_receive, result)


def _columns(conn: psycopg.Connection[Any]) -> set[str]:
    return {str(row[0]) for row in conn.execute(
        "select attname from pg_attribute where attrelid = to_regclass('crawl_jobs') "
        "and attnum > 0 and not attisdropped").fetchall()}


def _audit_jobs(conn: psycopg.Connection[Any], result: AuditResult) -> None:
    cols = _columns(conn)
    parent, child = _IS_PARENT.format(""), _IS_PARENT.format("c.")
    row = conn.execute(f"select count(*) filter (where {parent}), count(*) filter (where not {parent}) "
                       "from crawl_jobs").fetchone()
    assert row is not None
    # Quaero's progress_json, json or text, read as jsonb
    progress = progress_columns(
        cols, lambda k: f"coalesce((nullif(p.progress_json::text, '')::jsonb ->> '{k}')::numeric, 0)")
    record_tree(int(row[0]), int(row[1]), cols, progress, result)
    orphaned = (f"from crawl_jobs c where not {child} and not exists "
                f"(select 1 from crawl_jobs p where p.id = c.parent_id and {_IS_PARENT.format('p.')})")
    orphan_rows = conn.execute(f"select c.id, c.parent_id {orphaned} order by c.id limit 20").fetchall()
    count_row = conn.execute(f"select count(*) {orphaned}").fetchone()
    orphans = int(count_row[0]) if count_row else 0
    judge_orphans(orphans, orphan_rows, result)

    if progress is None:
        return
    rows = conn.execute(
        f"select p.id, p.status, {progress['total_urls']}, {progress['completed_urls']}, "
        f"{progress['failed_urls']}, {progress['pending_urls']}, count(c.id), "
        "count(c.id) filter (where c.status = 'completed'), count(c.id) filter (where c.status = 'failed') "
        f"from crawl_jobs p left join crawl_jobs c on c.parent_id = p.id "
        f"where {_IS_PARENT.format('p.')} group by p.id order by p.id").fetchall()
    judge_parents(rows, result)
