"""The looser queue contract: no id from send, the received object back at ack, acked rows kept (pytester).

The queue below is written as a library that keeps its acknowledged rows would be: no id
map, no id from ``send``, its own row object out of ``receive`` and back into ``delete``.
"""

from __future__ import annotations

import textwrap

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import extension, items, plugin  # noqa: F401
from pytest_quaero.core import harness, run  # noqa: F401
from pytest_quaero.core.protocols import AdaptedQueue

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
FAST = ("--quaero-job-time=1ms", "--quaero-stagger=50ms", "--quaero-poll-interval=20ms",
        "--quaero-visibility-timeout=2s", "--quaero-threshold=stagger_tolerance=2s",
        "--quaero-threshold=min_throughput=1")

RETAINING = """
import time
from dataclasses import dataclass

from pytest_quaero import QueueCounts, connect

LOSE = {lose!r}  # a body naming this job is acknowledged at receive and never handed out


def pytest_quaero_prepare_database(settings, db_path):
    conn = connect(db_path, settings)
    conn.execute("create table tasks (id integer primary key, body text, state text not null default 'ready', "
                 "until real not null default 0)")
    conn.close()


@dataclass
class Row:  # the library's own object: no `id` attribute the plugin knows
    rowid: int
    body: str


class KeepingQueue:
    def __init__(self, db_path, settings):
        self.conn = connect(db_path, settings)

    def send(self, body):
        self.conn.execute("insert into tasks (body) values (?)", (body.decode(),))  # no id returned

    def receive(self):
        while True:
            found = self.conn.execute(
                "update tasks set state = 'claimed', until = ? where id = (select id from tasks where state = "
                "'ready' or (state = 'claimed' and until < ?) order by id limit 1) returning id, body",
                (time.time() + 2.0, time.time())).fetchone()
            if found is None:
                return None
            if LOSE and LOSE in found[1]:
                self.delete(Row(*found))  # acknowledged, never processed
                continue
            return Row(*found)

    def delete(self, row):
        return self.conn.execute("update tasks set state = 'done' where id = ?", (row.rowid,)).rowcount == 1

    def counts(self):
        rows = dict(self.conn.execute("select state, count(*) from tasks group by state").fetchall())
        visible, claimed = rows.get("ready", 0), rows.get("claimed", 0)
        # done rows stay in the table: counted in total and in nothing else
        return QueueCounts(total=sum(rows.values()), visible=visible, in_flight=claimed, dead=0)

    def close(self):
        self.conn.close()


def pytest_quaero_make_queue(settings, db_path):
    return KeepingQueue(db_path, settings)
"""


def _verdict_line(result: pytest.RunResult, title: str) -> str:
    return next(line for line in result.outlines if line.startswith(f"  {title}"))


def test_a_retaining_queue_without_ids_passes_and_reads_acknowledged(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(textwrap.dedent(RETAINING.format(lose="")))
    result = pytester.runpytest(*BASE, *FAST, "--quaero-scenario=light")
    result.assert_outcomes(passed=10)
    line = _verdict_line(result, "Queue Deletion Success Rate")
    assert "100.0% (100/100 acknowledged)" in line and line.rstrip().endswith("PASS"), line


def test_a_job_acked_without_running_is_lost_not_zero_messages_left(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(textwrap.dedent(RETAINING.format(lose="-child-2-3\"")))
    result = pytester.runpytest(*BASE, *FAST, "--quaero-scenario=light", "-rA")
    # nothing is left in the queue and every message was acknowledged: only the job count says otherwise
    line = _verdict_line(result, "Queue Deletion Success Rate")
    assert "(100/100 acknowledged), 1 gone with the job unfinished" in line and line.rstrip().endswith("FAIL"), line
    completion = _verdict_line(result, "Job Completion Rate")
    assert "99.0% (99/100), 1 lost" in completion and completion.rstrip().endswith("FAIL"), completion
    result.assert_outcomes(passed=7, failed=3)  # and Hierarchy Integrity: its parent still has 1 pending


class _Library:
    """What a library hands out and takes back, for the adapter below."""

    def __init__(self) -> None:
        self.acked: list[object] = []


def test_the_plugin_keeps_the_received_object_for_the_ack() -> None:
    library = _Library()

    class Fetched:
        def __init__(self, body: str) -> None:
            self.body = body  # str is fine; no id, no received

    class Adapter:
        def send(self, body: bytes) -> None:
            return None

        def receive(self) -> Fetched:
            return fetched

        def delete(self, message: Fetched) -> bool:
            library.acked.append(message)
            return True

        def counts(self) -> object:
            class Counts:
                total, visible, in_flight, dead, acked = 7, 1, 1, 1, 4
            return Counts()

    fetched = Fetched('{"id": "run-child-1-1"}')
    queue = AdaptedQueue(Adapter())
    assert queue.send(b'{"id": "run-child-1-1"}') == "run-child-1-1"  # correlated by the body's job id
    message = queue.receive()
    assert message is not None and (message.id, message.body, message.received) == (
        "run-child-1-1", b'{"id": "run-child-1-1"}', 1)
    assert queue.delete(message.id) is True and library.acked == [fetched]  # the very object, back
    counts = queue.counts()  # an explicit `acked` wins; total is what is left to deliver or dead
    assert (counts.total, counts.visible, counts.in_flight, counts.dead, counts.acked) == (3, 1, 1, 1, 4)
