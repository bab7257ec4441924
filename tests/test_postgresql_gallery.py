"""The PostgreSQL lock gallery: each broken queue, store or handler is caught by the light or stress
scenario with the template's defaults, and the plugin's own queue passes both.

Each variant is the PostgreSQL shape of a lock regression (goqite PR #72 and its kin). They
plug into the run the way a team's code does (an endpoint factory, a handler) and run on the
session's embedded server. The default suite runs the correct queue on light and one broken
variant; ``-m slow`` runs the rest of the table and the correct queue under stress.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pg_support
import pytest
from pg_support import MISSING, needs_postgresql

from pytest_quaero.core import criteria
from pytest_quaero.core.jobs import Job, JobContext, SimulatedWork
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.worker import Endpoint

pytestmark = needs_postgresql
pg_server = pg_support.pg_server  # the shared fixture: one embedded server for every run

if MISSING is None:
    from pytest_quaero.core.postgresql.connect import connect, transaction
    from pytest_quaero.core.postgresql.queue import GOQITE_RECEIVE_SQL, RECEIVE_SQL, PgQueue
    from pytest_quaero.core.postgresql.store import PARENT_PROGRESS_SQL, PgJobStore

    class SerializableGoqite(PgQueue):
        """goqite v0.4.0's receive as it stands: its statement, in a SERIALIZABLE transaction (PR #72)."""

        RECEIVE_SQL = GOQITE_RECEIVE_SQL
        RECEIVE_ISOLATION = "SERIALIZABLE"

    class ForUpdateQueue(PgQueue):
        """The claim locks its row but waits for a row another claim holds (no SKIP LOCKED)."""

        RECEIVE_SQL = RECEIVE_SQL.replace("for update skip locked", "for update")

    class OppositeOrderStore(PgJobStore):
        """Starting a child touches the child, then its parent (child -> parent); finishing one moves the
        parent, then stamps the parent's progress on every unfinished sibling (parent -> child)."""

        def mark_running(self, job_id: str) -> None:
            with transaction(self.conn):
                self.conn.execute("update crawl_jobs set status = 'running', started_at = now() where id = %s "
                                  "and status not in ('completed', 'failed') returning parent_id", (job_id,))
                self.conn.execute("update crawl_jobs set started_at = coalesce(started_at, now()) where id = "
                                  "(select parent_id from crawl_jobs where id = %s)", (job_id,))

        def finish_child(self, job_id: str, parent_id: str, *, failed: bool = False, error: str = "") -> bool:
            with transaction(self.conn):
                row = self.conn.execute("select status from crawl_jobs where id = %s", (job_id,)).fetchone()
                if row is None or row[0] in ("completed", "failed"):
                    return False
                self.conn.execute(PARENT_PROGRESS_SQL, (0 if failed else 1, 1 if failed else 0, parent_id))
                self.conn.execute("update crawl_jobs set status = %s, completed_at = now() where id = %s",
                                  ("failed" if failed else "completed", job_id))
                self.conn.execute("update crawl_jobs set pending_urls = (select pending_urls from crawl_jobs "
                                  "where id = %s) where parent_id = %s and status not in ('completed', 'failed')",
                                  (parent_id, parent_id))
            return True


@dataclass(frozen=True)
class Endpoints:
    """An endpoint factory with a queue and a store class of its own (picklable: module-level classes)."""

    queue: str = "PgQueue"
    store: str = "PgJobStore"

    def __call__(self, dsn: str, settings: Settings) -> Endpoint:
        conn = connect(dsn, settings)
        queue = globals()[self.queue](conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                                      max_receive=settings.max_receive)
        return Endpoint(queue=queue, store=globals()[self.store](conn), close=conn.close)


_local = threading.local()


def hold_parent_row(job: Job, context: JobContext) -> None:
    """A handler that locks its parent's row (to read its crawl settings consistently) for the whole job."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = connect(context.db_path, context.settings, origin="user")
    low, high = context.settings.job_time
    with transaction(conn):
        conn.execute("select name from crawl_jobs where id = %s for update", (job.parent_id,)).fetchone()
        time.sleep(random.uniform(low, high))


@dataclass(frozen=True)
class Case:
    key: str
    scenario: str
    expected: tuple[str, ...]
    endpoints: Endpoints = Endpoints()
    handler: Any = None


BROKEN = [
    Case("serializable_receive", "light", ("sqlite_busy_errors",), Endpoints(queue="SerializableGoqite")),
    Case("for_update_without_skip_locked", "light", ("sqlite_busy_errors",), Endpoints(queue="ForUpdateQueue")),
    Case("opposite_order_deadlock", "stress", ("sqlite_busy_errors",), Endpoints(store="OppositeOrderStore")),
    Case("handler_holds_a_row_lock", "light", ("write_lock_hold",), handler=hold_parent_row),
]


def run_case(case: Case, tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    scenario = BUILTIN[case.scenario]
    settings = Settings(backend="postgresql")
    result = run_scenario(scenario, settings, run_dir=tmp_path, endpoint_factory=case.endpoints,
                          handler=case.handler or SimulatedWork(*settings.job_time, seed=settings.seed))
    verdicts = {v.criterion: v for v in criteria.evaluate(result, criteria.thresholds_for(scenario, {}))}
    return result, verdicts


def _failed(verdicts: dict[str, Any]) -> dict[str, str]:
    return {key: f"{v.title}: {v.message}" for key, v in verdicts.items() if not v.passed}


@pytest.mark.parametrize("scenario", ["light", pytest.param("stress", marks=pytest.mark.slow)])
def test_the_plugins_queue_passes_every_criterion(pg_server: Any, tmp_path: Path, scenario: str) -> None:
    result, verdicts = run_case(Case("correct", scenario, ()), tmp_path)
    assert not _failed(verdicts), _failed(verdicts)
    assert result.extra["postgresql"]["claim_check"]["ok"]
    assert verdicts["sqlite_busy_errors"].title == "Lock Errors"  # the backend-neutral name


@pytest.mark.parametrize("case", [
    pytest.param(case, id=case.key, marks=() if case.key == "for_update_without_skip_locked" else pytest.mark.slow)
    for case in BROKEN
])
def test_each_broken_variant_is_caught(pg_server: Any, tmp_path: Path, case: Case) -> None:
    result, verdicts = run_case(case, tmp_path)
    escaped = [key for key in case.expected if verdicts[key].passed]
    assert not escaped, (case.key, escaped, _failed(verdicts))
    lock_errors = verdicts["sqlite_busy_errors"]
    if case.key == "serializable_receive":
        assert "40001" in lock_errors.detail or "claimed row" in lock_errors.detail, lock_errors.detail
    if case.key == "opposite_order_deadlock":
        assert "40P01 deadlock_detected" in lock_errors.detail, lock_errors.detail
    if case.key == "for_update_without_skip_locked":
        assert not result.extra["postgresql"]["claim_check"]["ok"]
        assert "waits for a claimed row" in lock_errors.detail
    if case.key == "handler_holds_a_row_lock":
        assert "handler" in verdicts["write_lock_hold"].measured
