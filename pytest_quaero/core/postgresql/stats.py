"""The server's own counters for one run: transactions, rows and deadlocks, from pg_stat deltas.

They count what every client did, in any language, without tracing it: a Go worker's
statements show up as surely as the plugin's. The run reads them before its pool starts
and again once every connection that carried its ``application_name`` has gone (a backend
hands its counters to the statistics system when it exits, so nothing is left pending):

* per table of the run's schema (``pg_stat_user_tables``): rows inserted, updated
  (``hot`` of them in place), deleted; sequential and index scans. The schema is the
  run's alone, so these are exact for the run;
* per database (``pg_stat_database``): transactions committed and rolled back, rows
  returned and fetched, deadlocks detected. Shared with anything else in that database
  (another run's schema on the same server), which the result says.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

__all__ = ["DATABASE_COUNTERS", "TABLE_COUNTERS", "delta", "settle", "snapshot"]

TABLE_COUNTERS = ("n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del", "seq_scan", "idx_scan")
DATABASE_COUNTERS = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
                     "tup_updated", "tup_deleted", "deadlocks")
#: friendlier names in the result
_TABLE_NAMES = {"n_tup_ins": "rows_inserted", "n_tup_upd": "rows_updated", "n_tup_hot_upd": "rows_hot_updated",
                "n_tup_del": "rows_deleted", "seq_scan": "seq_scans", "idx_scan": "index_scans"}
_DATABASE_NAMES = {"xact_commit": "transactions_committed", "xact_rollback": "transactions_rolled_back",
                   "tup_returned": "rows_returned", "tup_fetched": "rows_fetched", "tup_inserted": "rows_inserted",
                   "tup_updated": "rows_updated", "tup_deleted": "rows_deleted", "deadlocks": "deadlocks"}


def snapshot(conn: psycopg.Connection[Any], schema: str) -> dict[str, Any]:
    """The counters now: ``{"database": {...}, "tables": {table: {...}}}``."""
    # autocommit: each statement reads fresh statistics, not a snapshot an earlier one cached
    columns = ", ".join(f"coalesce({name}, 0)::bigint" for name in DATABASE_COUNTERS)
    row = conn.execute(f"select {columns} from pg_stat_database where datname = current_database()").fetchone()
    database = dict(zip(DATABASE_COUNTERS, (int(v) for v in row or ()), strict=False))
    columns = ", ".join(f"coalesce({name}, 0)::bigint" for name in TABLE_COUNTERS)
    tables = {
        str(r[0]): dict(zip(TABLE_COUNTERS, (int(v) for v in r[1:]), strict=True))
        for r in conn.execute(f"select relname, {columns} from pg_stat_user_tables where schemaname = %s",
                              (schema,)).fetchall()
    }
    return {"database": database, "tables": tables}


def settle(conn: psycopg.Connection[Any], application_name: str, timeout: float = 10.0) -> int:
    """Wait (up to ``timeout`` s) until no other backend of the run is connected; returns how many still are."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute("select count(*) from pg_stat_activity where application_name = %s "
                           "and pid <> pg_backend_pid()", (application_name,)).fetchone()
        left = int(row[0]) if row else 0
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def delta(before: dict[str, Any], after: dict[str, Any], jobs: int = 0) -> dict[str, Any]:
    """What the run did between two snapshots, with friendly names; per job when ``jobs`` is given."""
    database = {_DATABASE_NAMES[k]: after["database"].get(k, 0) - before["database"].get(k, 0)
                for k in DATABASE_COUNTERS}
    tables: dict[str, dict[str, int]] = {}
    for table, counters in sorted(after["tables"].items()):
        old = before["tables"].get(table, {})
        tables[table] = {_TABLE_NAMES[k]: counters.get(k, 0) - old.get(k, 0) for k in TABLE_COUNTERS}
    total = {name: sum(t[name] for t in tables.values()) for name in _TABLE_NAMES.values()}
    out: dict[str, Any] = {"tables": tables, "rows": total, "database": database,
                           "database_shared": True}
    if jobs:
        out["rows_per_job"] = {name: round(value / jobs, 4) for name, value in total.items()}
    return out
