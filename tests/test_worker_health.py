"""A worker that dies fails the run, even when the others drain the queue around it (pytester)."""

from __future__ import annotations

import textwrap

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import run  # noqa: F401

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
FAST = ("--quaero-job-time=1ms", "--quaero-stagger=50ms", "--quaero-poll-interval=20ms",
        "--quaero-visibility-timeout=300ms", "--quaero-threshold=stagger_tolerance=2s",
        "--quaero-threshold=min_throughput=1")

STRICT_QUEUE = """
from pytest_quaero import Queue


class StrictQueue(Queue):
    # validates each body it claims, and one it does not expect kills the worker that claimed it
    def receive(self):
        message = super().receive()
        if message is not None and b"-child-3-7" in message.body and message.received == 1:
            raise ValueError(f"unexpected body in {message.id}")
        return message


def pytest_quaero_make_queue(settings, connection):
    return StrictQueue(connection(), settings.queue_name, visibility_timeout=settings.visibility_timeout,
                       max_receive=settings.max_receive)
"""


def test_a_dead_worker_fails_worker_health_while_the_others_drain(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(textwrap.dedent(STRICT_QUEUE))
    result = pytester.runpytest(*BASE, "--quaero-scenario=light", *FAST)
    result.assert_outcomes(passed=9, failed=1)  # every job completed: only Worker Health says what happened
    result.stdout.fnmatch_lines([
        "quaero[[]light[]] Worker Health: measured 1 crashed: JobWorker-*, required no worker crashed "
        "(JobWorker-*: ValueError: unexpected body in m_* (raised at conftest.py:* in receive))",
    ])


def test_the_built_in_queue_keeps_every_worker_alive(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*BASE, "--quaero-scenario=light", *FAST, "-rA")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["*quaero[[]light[]]::worker_health*"])
