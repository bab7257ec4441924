"""One run on PostgreSQL: its schema, its endpoints, its monitor, and what the server counted.

:mod:`pytest_quaero.core.run` asks the same questions of either backend; on PostgreSQL
they are answered here. :class:`PgRun` owns the run's schema from creation to drop, the
server-side counters (:mod:`.stats`) and the claim-wait watch; the worker loop, the
producers and the monitor get the same kind of queue and store as on SQLite.

**The claim check.** A correct claim (``FOR UPDATE SKIP LOCKED``) never waits for another
worker: it passes over a message being claimed. A claim that waits serialises every worker
behind the one claiming, and no error says so; two claims overlap only by chance (for well
under a millisecond), so the run does not wait for chance: before the pool starts it holds a
row as a claim in progress would and asks the queue's own ``receive`` (:func:`check_claim`).
A claim that waits, fails or misses is filed as a lock error of ``queue_receive`` nobody caught.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg

from pytest_quaero.core.instruments import HARNESS_OPERATION, operation
from pytest_quaero.core.postgresql import integrity as pg_integrity
from pytest_quaero.core.postgresql import stats
from pytest_quaero.core.postgresql.connect import Session, connect, read_session
from pytest_quaero.core.postgresql.errors import lock_error_name
from pytest_quaero.core.postgresql.queue import PgQueue
from pytest_quaero.core.postgresql.queue import create_schema as create_queue_schema
from pytest_quaero.core.postgresql.server import RunSchema, create_run_schema, redact, server_for
from pytest_quaero.core.postgresql.store import PgJobStore
from pytest_quaero.core.postgresql.store import create_schema as create_store_schema
from pytest_quaero.core.settings import Settings

__all__ = ["CLAIM_WAIT_OPERATION", "PgRun", "check_claim", "endpoint_parts", "open_monitor"]

#: where a claim that waits for (or fails on, or misses) a row another claim holds is filed among
#: the lock errors nobody caught
CLAIM_WAIT_OPERATION = "queue_receive (waits for a claimed row)"
#: the claim check's own queue: the run's queue name and this
CLAIM_CHECK_SUFFIX = "__claim_check"
#: the longest the claim check waits for the receive (seconds); a receive blocked by the held row is
#: seen at once (pg_locks), this is for one that hangs otherwise
_CLAIM_CHECK_LIMIT = 30.0
#: how often it asks the server whether the receive is blocked (seconds)
_CLAIM_CHECK_POLL = 0.02
#: the monitor's own lock_timeout floor (ms): it is the harness, patient with locks
_MONITOR_LOCK_TIMEOUT_MS = 10_000


def endpoint_parts(dsn: str, settings: Settings) -> tuple[PgQueue, PgJobStore, Any]:
    """The built-in queue and store on one fresh connection, and the call that closes it."""
    conn = connect(dsn, settings)
    queue = PgQueue(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                    max_receive=settings.max_receive)
    return queue, PgJobStore(conn, begin_immediate=settings.begin_immediate), conn.close


def open_monitor(dsn: str, settings: Settings) -> psycopg.Connection[Any]:
    """The monitor's connection: waits for locks however short the settings make lock_timeout."""
    return connect(dsn, settings, origin="harness",
                   lock_timeout_ms=max(settings.busy_timeout_ms, _MONITOR_LOCK_TIMEOUT_MS))


def check_claim(endpoint_factory: Callable[[str, Settings], Any], dsn: str, settings: Settings) -> dict[str, Any]:
    """Does the queue's claim pass over a message another claim holds, as ``SKIP LOCKED`` does?

    Asked once per run, before the pool starts, of the run's own queue code on a queue of its
    own name (the run's messages are not touched): two messages are sent, the harness locks the
    older one as a claim in progress would, and the queue's ``receive`` is called. A correct
    claim returns the other message at once; one that waits (``FOR UPDATE`` alone, goqite's
    plain subquery), fails (``NOWAIT``) or returns nothing has the bug the run would otherwise
    see only by chance, when two workers' claims happen to overlap.
    """
    name = f"{settings.queue_name}{CLAIM_CHECK_SUFFIX}"
    outcome: dict[str, Any] = {"queue": name}
    got: list[Any] = []
    ready, go = threading.Event(), threading.Event()

    def claim() -> None:
        with operation(HARNESS_OPERATION):
            try:
                # opened before the row is held: only the receive is judged, not a slow connect on a busy machine
                endpoint = endpoint_factory(dsn, settings.replace(source="claim check", queue_name=name))
            except Exception as exc:  # noqa: BLE001 - whatever the queue raises is the finding
                got.append(exc)
                ready.set()
                return
            try:
                ready.set()
                go.wait(_CLAIM_CHECK_LIMIT)
                message = endpoint.queue.receive()
                got.append(None if message is None else str(message.id))
            except Exception as exc:  # noqa: BLE001 - whatever the queue raises is the finding
                got.append(exc)
            finally:
                endpoint.close()

    with psycopg.connect(dsn, autocommit=True) as harness:
        sent = harness.execute("insert into goqite (queue, body, created) values (%s, %s, now()), "
                               "(%s, %s, now() + %s) returning id, created", (name, b"{}", name, b"{}",
                                                                            timedelta(milliseconds=1))).fetchall()
        ids = [str(row[0]) for row in sorted(sent, key=lambda row: row[1])]  # older first
        thread = threading.Thread(target=claim, name="quaero-pg-claim-check", daemon=True)
        thread.start()
        ready.wait(_CLAIM_CHECK_LIMIT)
        harness.execute("begin")
        harness.execute("select id from goqite where id = %s for update", (ids[0],))
        go.set()
        outcome["waited"] = _blocked_by(harness, thread)
        harness.execute("rollback")
        thread.join(_CLAIM_CHECK_LIMIT)
        harness.execute("delete from goqite where queue = %s", (name,))
    result = got[0] if got else None
    if isinstance(result, Exception):
        outcome["error"] = f"{lock_error_name(result) or type(result).__name__}: {' '.join(str(result).split())}"
    outcome["claimed"] = ("the free message" if result == ids[1] else "the held message" if result == ids[0]
                          else "nothing" if result is None or isinstance(result, Exception) else str(result))
    outcome["ok"] = not outcome["waited"] and result == ids[1]
    return outcome


def _blocked_by(harness: psycopg.Connection[Any], thread: threading.Thread) -> bool:
    """Until the claim returns: is it waiting for the row the harness holds? Asked of the server's lock
    table (live, not a statistics snapshot), so a claim slowed by a busy machine is not taken for one
    that waits; one still running after the limit, for whatever reason, is."""
    deadline = time.monotonic() + _CLAIM_CHECK_LIMIT
    while thread.is_alive():
        row = harness.execute("select count(*) from pg_locks where not granted "
                              "and pg_backend_pid() = any(pg_blocking_pids(pid))").fetchone()
        if (row is not None and row[0]) or time.monotonic() > deadline:
            return True
        thread.join(_CLAIM_CHECK_POLL)
    return False


class PgRun:
    """A run's schema on its server: prepared, checked, counted, and dropped."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.settings = settings
        self.server = server_for(settings.dsn)
        self.schema: RunSchema = create_run_schema(self.server, run_id)
        self.session: Session | None = None
        self.claim: dict[str, Any] | None = None
        self._admin: Any = None
        self._before: dict[str, Any] | None = None

    @property
    def dsn(self) -> str:
        """Where every connection of the run goes (the run's schema on its search_path)."""
        return self.schema.dsn

    @property
    def shown_dsn(self) -> str:
        """The run's DSN as results and reports show it: no password."""
        return redact(self.schema.dsn)

    @staticmethod
    def integrity(conn: Any, run_id: str, **counts: Any) -> dict[str, Any]:
        """The template's consistency SQL, as :func:`pytest_quaero.core.integrity.check` judges it."""
        return pg_integrity.check(conn, run_id, **counts)

    def prepare(self) -> Session:
        """goqite's table and crawl_jobs in the run's schema; the session settings read back."""
        with operation(HARNESS_OPERATION):
            conn = connect(self.dsn, self.settings, origin="setup")
            try:
                create_queue_schema(conn)
                create_store_schema(conn)
                self.session = read_session(conn)
            finally:
                conn.close()
        return self.session

    def start(self, endpoint_factory: Callable[[str, Settings], Any] | None) -> None:
        """The claim check (of the run's own queue code; None: a worker command's, not callable
        here), then the server's counters, just before the pool's first statement."""
        if endpoint_factory is not None:
            self.claim = check_claim(endpoint_factory, self.dsn, self.settings)
        self._admin = psycopg.connect(self.server.dsn, autocommit=True)
        self._before = stats.snapshot(self._admin, self.schema.schema)

    def finish(self, result: Any, jobs: int) -> None:
        """What the server counted and the claim check found, into ``result.extra["postgresql"]``.

        Call after every connection of the run's pool and producers is closed.
        """
        info: dict[str, Any] = {
            "server": self.server.describe(), "server_version": self.server.version,
            "embedded": self.server.embedded, "startup_seconds": self.server.startup_seconds,
            "schema": self.schema.schema, "dsn": redact(self.dsn),
            "session": self.session.as_dict() if self.session else {}, "claim_check": self.claim,
        }
        if self._admin is not None and self._before is not None:
            lingering = stats.settle(self._admin, self.schema.application_name)
            info["stats"] = stats.delta(self._before, stats.snapshot(self._admin, self.schema.schema), jobs)
            info["stats"]["connections_still_open"] = lingering
        if self.claim is not None and not self.claim["ok"]:
            hidden = result.extra.setdefault("hidden_busy", {"total": 0, "operations": {}})
            hidden.setdefault("operations", {})[CLAIM_WAIT_OPERATION] = 1
            hidden["total"] = int(hidden.get("total", 0)) + 1
            claim = self.claim
            how = ("waited for it" if claim["waited"] else f"failed ({claim['error']})" if claim.get("error")
                   else f"claimed {claim['claimed']}")
            info["lock_notes"] = [f"the queue's claim, given a message another claim holds and a free one, {how}: "
                                  "without FOR UPDATE SKIP LOCKED every worker queues behind the one claiming"]
        codes = set(result.retry_totals.codes)
        if codes & {"40001 serialization_failure", "40P01 deadlock_detected"}:
            # the criterion's "well before busy_timeout" line speaks of SQLite's locks: say what these are
            info.setdefault("lock_notes", []).append(
                "on PostgreSQL 40001 (a SERIALIZABLE transaction lost a race) and 40P01 (two transactions took the "
                "same rows in opposite orders) come at once, whatever lock_timeout is: waiting longer never cures them")
        result.extra["postgresql"] = info

    def close(self) -> None:
        """Drop the run's schema (only it) and the admin connection."""
        try:
            self.schema.drop()
        finally:
            if self._admin is not None:
                self._admin.close()
                self._admin = None
