"""Broken crawl-job stores. Each subclass changes one method of the correct :class:`JobStore`."""

from __future__ import annotations

import sqlite3
import time

from pytest_quaero.core.db import conn_path
from pytest_quaero.core.store import NOW, TERMINAL, JobStore


class ReadThenWriteStore(JobStore):
    """finish_child as Quaero wrote it: read the child's status, then write child and parent.

    ``deferred=True`` is the bug: a plain (DEFERRED) ``BEGIN`` takes a read snapshot at
    the SELECT, and the first UPDATE must upgrade it; when another worker committed in
    between, SQLite refuses at once with SQLITE_BUSY_SNAPSHOT (or SQLITE_BUSY when the
    other still holds the lock), and no busy_timeout helps (research §1). With
    ``deferred=False`` the same code starts with ``BEGIN IMMEDIATE``: the correct store.
    The 2ms between read and write stands for the checks a real store does there.
    """

    read_to_write = 0.002

    def __init__(self, conn: sqlite3.Connection, *, deferred: bool) -> None:
        super().__init__(conn, begin_immediate=not deferred)

    def finish_child(self, job_id: str, parent_id: str, *, failed: bool = False, error: str = "") -> bool:
        status = "failed" if failed else "completed"
        self.conn.execute("BEGIN IMMEDIATE" if self.begin_immediate else "BEGIN")
        try:
            row = self.conn.execute("select status from crawl_jobs where id = ?", (job_id,)).fetchone()
            if row is None or row[0] in TERMINAL:
                self.conn.execute("COMMIT")
                return False
            time.sleep(self.read_to_write)
            self.conn.execute(f"update crawl_jobs set status = ?, completed_at = {NOW}, error = ? where id = ?",
                              (status, error[:500], job_id))
            self.conn.execute(
                f"update crawl_jobs set completed_urls = completed_urls + ?, failed_urls = failed_urls + ?, "
                f"pending_urls = pending_urls - 1, "
                f"status = case when pending_urls - 1 <= 0 then 'completed' else status end, "
                f"completed_at = case when pending_urls - 1 <= 0 then {NOW} else completed_at end "
                f"where id = ? and pending_urls > 0",
                (0 if failed else 1, 1 if failed else 0, parent_id),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.rollback()
            raise
        return True


class ParentApartStore(JobStore):
    """Child rows committed apart from their parent: the parent's write never commits.

    The parent is saved through a connection of its own in the sqlite3 module's legacy
    transaction mode, which opens an implicit BEGIN before the INSERT; nobody calls
    ``commit()``, and closing the connection rolls it back. No exception anywhere: the
    children, committed on the producer's connection, are orphans (research §6, §7).
    """

    def save_parent(self, job_id: str, name: str, total: int) -> None:
        side = sqlite3.connect(conn_path(self.conn), timeout=10)  # isolation_level "" = implicit BEGIN
        try:
            side.execute(
                f"insert into crawl_jobs (id, parent_id, job_type, name, status, total_urls, pending_urls, started_at) "
                f"values (?, '', 'parent', ?, 'running', ?, ?, {NOW})",
                (job_id, name, total, total),
            )
        finally:
            side.close()  # the forgotten commit()
