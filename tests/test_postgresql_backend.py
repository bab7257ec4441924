"""A PostgreSQL run's own checks: the claim check tells a claim that skips a held row from one that
waits, fails or misses, by holding a row itself rather than waiting for two workers to collide."""

from __future__ import annotations

from typing import Any

import pg_support
import pytest
from pg_support import MISSING, needs_postgresql

from pytest_quaero.core.settings import Settings
from pytest_quaero.core.worker import Endpoint

pytestmark = needs_postgresql
pg_server, pg_schema = pg_support.pg_server, pg_support.pg_schema  # the shared fixtures

if MISSING is None:
    from pytest_quaero.core.postgresql.backend import check_claim
    from pytest_quaero.core.postgresql.connect import connect
    from pytest_quaero.core.postgresql.queue import GOQITE_RECEIVE_SQL, RECEIVE_SQL, PgQueue

    class ForUpdate(PgQueue):
        RECEIVE_SQL = RECEIVE_SQL.replace("for update skip locked", "for update")

    class NoWait(PgQueue):
        RECEIVE_SQL = RECEIVE_SQL.replace("for update skip locked", "for update nowait")

    class SerializableGoqite(PgQueue):
        RECEIVE_SQL = GOQITE_RECEIVE_SQL
        RECEIVE_ISOLATION = "SERIALIZABLE"


def _factory(queue_class: type) -> Any:
    def open_endpoint(dsn: str, settings: Settings) -> Endpoint:
        conn = connect(dsn, settings)
        return Endpoint(queue=queue_class(conn, settings.queue_name), store=None, close=conn.close)

    return open_endpoint


def test_a_skip_locked_claim_takes_the_free_message_at_once(pg_schema: Any) -> None:
    outcome = check_claim(_factory(PgQueue), pg_schema.dsn, Settings())
    assert outcome == {**outcome, "ok": True, "waited": False, "claimed": "the free message"}


@pytest.mark.parametrize(("name", "expected"), [
    ("ForUpdate", {"waited": True, "claimed": "the held message"}),
    ("SerializableGoqite", {"waited": True}),
    ("NoWait", {"waited": False, "claimed": "nothing"}),
])
def test_a_claim_that_waits_fails_or_misses_is_caught(pg_schema: Any, name: str, expected: dict[str, Any]) -> None:
    outcome = check_claim(_factory(globals()[name]), pg_schema.dsn, Settings())
    assert outcome == {**outcome, "ok": False, **expected}
    if name == "NoWait":
        assert outcome["error"].startswith("55P03 lock_not_available")


def test_the_claim_check_leaves_the_runs_queue_alone(pg_schema: Any) -> None:
    with connect(pg_schema.dsn, Settings()) as conn:
        PgQueue(conn).send(b"the run's own")
        check_claim(_factory(PgQueue), pg_schema.dsn, Settings())
        assert [row[0] for row in conn.execute("select queue from goqite")] == ["quaero_jobs"]


def test_the_probe_tells_a_missed_message_by_how_the_receive_looked(pg_schema: Any) -> None:
    import time

    import psycopg

    from pytest_quaero.core.instruments import instrumenting, operation
    from pytest_quaero.core.postgresql.probe import PgProbe

    settings = Settings(max_receive=3)
    with instrumenting(), connect(pg_schema.dsn, settings) as conn:  # as in a run: statements observed
        visible = PgQueue(conn).send(b"{}")
        time.sleep(0.02)  # visible since before the receive below started
        probe = PgProbe(pg_schema.dsn, settings)
        with operation("queue_receive"):
            started = time.time()
            conn.execute("select 1")  # a receive that found nothing, touching no lock
        assert probe.stall(started) == ("lock_free", visible)
        with operation("queue_receive"):
            started = time.time()
            conn.execute("select id from goqite where queue = 'none' limit 1 for update")  # a claim that waits
        assert probe.stall(started) == ("lock_held", visible)
        with psycopg.connect(pg_schema.dsn, autocommit=True) as other:
            other.execute("begin")
            other.execute("select id from goqite where id = %s for update", (visible,))  # being claimed
            with operation("queue_receive"):
                started = time.time()
            assert probe.stall(started) is None  # a SKIP LOCKED receive was right to pass it over
            other.execute("rollback")
        assert probe.still_queued(visible) is True and probe.job_status("nobody") == "(no row)"
        probe.close()
