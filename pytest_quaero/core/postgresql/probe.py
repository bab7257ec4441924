"""The harness's look at a PostgreSQL queue from inside a worker: stalls, stale acks, job rows.

:class:`pytest_quaero.core.probe.Probe`'s questions, asked of the run's schema on a
connection of the worker's own (filed under the harness operation). A stall is an empty
receive while a message was visible since before the receive started *and nobody was
touching it*: a row another transaction is claiming (``xmax`` set) is not one a receive
with ``SKIP LOCKED`` should have taken. Told apart like SQLite's:

* ``lock_error_seen``: the receive met a lock error (40001, 55P03, ...) and returned nothing;
* ``lock_held``: the receive is a locking read that waits (``FOR UPDATE`` without ``SKIP
  LOCKED``): under READ COMMITTED, ``LIMIT 1 FOR UPDATE`` waits for the row another worker
  claims, then finds it no longer matching and returns *nothing*, with other messages
  visible all along: the worker gave up on a lock;
* ``lock_free``: the message was there and free, and the receive did not see it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pytest_quaero.core.instruments import HARNESS_OPERATION, last_busy_timeout_ms, operation
from pytest_quaero.core.postgresql.connect import connect, last_read_waited_for_locks
from pytest_quaero.core.probe import STALL_SLACK, Probe
from pytest_quaero.core.settings import Settings

__all__ = ["PgProbe"]

_STALL_SQL = ("select id from goqite where queue = %s and received < %s and timeout <= to_timestamp(%s) "
              "and xmax = '0'::xid limit 1")


class PgProbe(Probe):
    """One worker's harness connection, opened on first use; job_status, still_queued and close are the
    SQLite probe's, asked through psycopg."""

    placeholder = "%s"
    driver_error = psycopg.Error

    def __init__(self, dsn: str, settings: Settings) -> None:
        self.dsn, self.settings = dsn, settings
        self._conn: Any = None
        self._broken = False

    def _connection(self) -> Any:
        if self._conn is None and not self._broken:
            try:
                self._conn = connect(self.dsn, self.settings, origin="harness", lock_timeout_ms=0)
            except psycopg.Error:
                self._broken = True
        return self._conn

    def stall(self, receive_started_wall: float) -> tuple[str, str] | None:
        """``(kind, message id)`` when an empty receive missed a message (module doc), else None."""
        waited = last_read_waited_for_locks()  # about the receive: read before the probe's own operation
        with operation(HARNESS_OPERATION):
            swallowed = last_busy_timeout_ms() is not None  # read before the probe's own statements
            conn = self._connection()
            if conn is None:
                return None
            since = receive_started_wall - STALL_SLACK
            try:
                row = conn.execute(_STALL_SQL, (self.settings.queue_name, self.settings.max_receive,
                                                since)).fetchone()
            except psycopg.Error:
                return None
            if row is None:
                return None
            if swallowed:
                return "lock_error_seen", str(row[0])
            return ("lock_held" if waited else "lock_free"), str(row[0])
