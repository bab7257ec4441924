"""The harness's own look at the database from inside a worker: stalls, stale acks, job rows.

A worker asks these questions only when something already looks wrong (a receive that
came back empty, an ack that removed nothing, a completion that changed no row), on a
connection of its own filed under the harness operation, so what the code under test
does is measured without them.

**Stalls.** goqite's receive claims the oldest visible message in one statement that holds
the write lock while it runs, so it sees every message committed before it got the lock.
A message whose visibility began (its ``timeout``, stamped in the sending transaction, after
that transaction took the write lock) before the receive started was therefore committed
before the receive could write: if it is *still* visible after the receive returned
nothing, the receive missed it. Such a stall is then told apart by the lock:

* ``lock_error_seen``: the receive's own connections met a lock error (swallowed, since it
  returned nothing); already counted as a hidden busy error where SQLite raised it;
* ``lock_held``: no lock error reached an observed connection, but another writer holds the
  write lock right now (``BEGIN IMMEDIATE`` with busy_timeout 0 is refused): the receive gave
  up on a lock where nobody could see it, e.g. on a connection the run cannot observe.
  Counted as a hidden busy error;
* ``lock_free``: the lock is free and the message was there: the receive does not see
  messages it should (a filter, a wrong queue name). Counted and reported.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time

from pytest_quaero.core import db
from pytest_quaero.core.instruments import HARNESS_OPERATION, last_busy_timeout_ms, operation
from pytest_quaero.core.queue import TIMEOUT_UTC
from pytest_quaero.core.retry import classify
from pytest_quaero.core.settings import Settings

__all__ = ["MISSING", "STALL_SLACK", "Probe", "goqite_time"]

#: a message must have been visible this long before the receive started to count as missed
#: (goqite's timestamps have millisecond resolution; the clock is the same, the rounding is not)
STALL_SLACK = 0.005

#: :meth:`Probe.job_status` of a job that has no row
MISSING = "(no row)"

_STALL_SQL = f"select id from goqite where queue = ? and received < ? and {TIMEOUT_UTC} <= ? limit 1"


def goqite_time(wall: float) -> str:
    """``wall`` (``time.time()``) as goqite writes its timestamps: UTC, milliseconds."""
    whole = int(wall)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((wall - whole) * 1000):03d}Z"


class Probe:
    """One worker's harness connection, opened on first use."""

    #: the driver's parameter placeholder and error class (the PostgreSQL probe sets its own)
    placeholder = "?"
    driver_error: type[Exception] = sqlite3.Error

    def __init__(self, db_path: str, settings: Settings) -> None:
        self.db_path, self.settings = db_path, settings
        self._conn: sqlite3.Connection | None = None
        self._broken = False

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None and not self._broken:
            try:
                # busy_timeout 0: the probe asks about the lock, it never waits for it
                self._conn = db.connect(self.db_path, dataclasses.replace(self.settings, busy_timeout_ms=0),
                                        origin="harness")
            except sqlite3.Error:
                self._broken = True
        return self._conn

    def stall(self, receive_started_wall: float) -> tuple[str, str] | None:
        """``(kind, message id)`` when an empty receive missed a message (module doc), else None."""
        with operation(HARNESS_OPERATION):
            swallowed = last_busy_timeout_ms() is not None  # read before the probe's own statements
            conn = self._connection()
            if conn is None:
                return None
            since = goqite_time(receive_started_wall - STALL_SLACK)
            try:
                row = conn.execute(_STALL_SQL, (self.settings.queue_name, self.settings.max_receive, since)).fetchone()
            except sqlite3.Error:
                return None  # a rollback-journal writer blocks readers: no verdict, not a stall
            if row is None:
                return None
            if swallowed:
                return "lock_error_seen", str(row[0])
            return ("lock_held" if self._write_lock_taken(conn) else "lock_free"), str(row[0])

    @staticmethod
    def _write_lock_taken(conn: sqlite3.Connection) -> bool:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return classify(exc) is not None
        conn.execute("ROLLBACK")
        return False

    def job_status(self, job_id: str) -> str | None:
        """The job row's status, ``MISSING`` when there is no such row, None when it could not be read."""
        with operation(HARNESS_OPERATION):
            conn = self._connection()
            if conn is None:
                return None
            try:
                row = conn.execute(f"select status from crawl_jobs where id = {self.placeholder}",
                                   (job_id,)).fetchone()
            except self.driver_error:
                return None
            return MISSING if row is None else str(row[0])

    def still_queued(self, message_id: str) -> bool | None:
        """Whether goqite still holds ``message_id`` (None: could not tell)."""
        with operation(HARNESS_OPERATION):
            conn = self._connection()
            if conn is None:
                return None
            try:
                return conn.execute(f"select 1 from goqite where id = {self.placeholder}",
                                    (message_id,)).fetchone() is not None
            except self.driver_error:
                return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
