"""The counted gate: `--quaero-baseline` alone fails a run that does more database work per job.

One extra SELECT per job, or one extra connection per job, is the kind of change that makes
a queue slower under load long before a timing gate notices: the counts move by exactly one
per job while throughput stays inside the machine's noise. Each is written as a user would
(a queue through `pytest_quaero_make_queue`), against a baseline the built-in queue recorded.
"""

from __future__ import annotations

import json
import textwrap

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import baseline, counts, gate, run  # noqa: F401

FAST = ("--quaero-job-time=1ms", "--quaero-stagger=50ms", "--quaero-poll-interval=20ms")
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")

EXTRA_SELECT = """
from pytest_quaero import Queue


class PeekingQueue(Queue):
    def receive(self):
        # "how deep is the queue?" for a log line, once per job: one more statement per job
        self.conn.execute("select count(*) from goqite where queue = ?", (self.name,)).fetchone()
        return super().receive()


def pytest_quaero_make_queue(settings, connection):
    return PeekingQueue(connection(), settings.queue_name, visibility_timeout=settings.visibility_timeout,
                        max_receive=settings.max_receive)
"""

EXTRA_CONNECTION = """
import sqlite3

from pytest_quaero import Queue


class FreshConnectionAck(Queue):
    def delete(self, message_id):
        # a connection per ack "to keep the worker's connection free": one more connection per job
        conn = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        try:
            return conn.execute("delete from goqite where queue = ? and id = ?", (self.name, message_id)).rowcount == 1
        finally:
            conn.close()


def pytest_quaero_make_queue(settings, db_path, connection):
    queue = FreshConnectionAck(connection(), settings.queue_name, visibility_timeout=settings.visibility_timeout,
                               max_receive=settings.max_receive)
    queue.db_path = db_path
    return queue
"""


def run_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE, "--quaero-scenario=light", *FAST, *RELAXED, *args)


def test_the_same_queue_passes_the_counted_gate(pytester: pytest.Pytester) -> None:
    run_pytest(pytester, "--quaero-save-baseline=base.json").assert_outcomes(passed=11)
    stored = json.loads((pytester.path / "base.json").read_text())["results"][0]["extra"]["counts"]
    assert stored["per_job"]["statements"] > 0 and stored["total"]["connections"] > 0
    again = run_pytest(pytester, "--quaero-baseline=base.json", "-rA")
    again.assert_outcomes(passed=11)
    again.stdout.fnmatch_lines(["*statements_per_job*+0*PASS*", "*connections*+0*PASS*"])


@pytest.mark.parametrize(("source", "metric", "moved"), [
    (EXTRA_SELECT, "statements_per_job", "queue_receive: select +1 per job"),
    (EXTRA_CONNECTION, "connections", "queue_delete: connections +1 per job"),
], ids=["one-select-per-job", "one-connection-per-job"])
def test_one_more_per_job_fails_the_counted_gate(pytester: pytest.Pytester, source: str, metric: str,
                                                 moved: str) -> None:
    run_pytest(pytester, "--quaero-save-baseline=base.json").assert_outcomes(passed=11)
    pytester.makeconftest(textwrap.dedent(source))
    result = run_pytest(pytester, "--quaero-baseline=base.json")  # no --quaero-compare-fail rule at all
    result.assert_outcomes(passed=10, failed=1)
    failure = [line for line in result.outlines if line.startswith("quaero[light] Regression vs Baseline")]
    assert len(failure) == 1 and f"measured {metric} " in failure[0] and moved in failure[0], result.outlines
    # a tolerance for that count lets it through: the same grammar as the time rules
    tolerant = run_pytest(pytester, "--quaero-baseline=base.json", f"--quaero-compare-fail={metric}:+1000")
    tolerant.assert_outcomes(passed=11)


def test_a_time_rule_tighter_than_the_noise_is_warned_about(pytester: pytest.Pytester) -> None:
    run_pytest(pytester, "--quaero-save-baseline=base.json").assert_outcomes(passed=11)
    result = run_pytest(pytester, "--quaero-baseline=base.json", "--quaero-compare-fail=throughput:0.1%", "-rA")
    # the same queue: the criteria pass; the regression item may still fail, 1 time in 20, if the
    # machine moved throughput beyond 2x the noise both runs measured (that is what a 95% band means)
    outcomes = result.parseoutcomes()
    assert outcomes.get("warnings") == 1 and outcomes.get("passed", 0) >= 9, outcomes
    result.stdout.fnmatch_lines(["*BaselineWarning: light-5x20: throughput:0.1% is tighter than the noise these two "
                                 "runs measured of throughput (±*%)*", "*throughput*±*%*"])
