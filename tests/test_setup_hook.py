"""pytest_quaero_prepare_database: once per file, before the pool, its time apart; one path per run (pytester)."""

from __future__ import annotations

import json
import textwrap

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import extension, items, plugin  # noqa: F401
from pytest_quaero.core import harness, run  # noqa: F401

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
FAST = ("--quaero-job-time=1ms", "--quaero-stagger=50ms", "--quaero-poll-interval=20ms",
        "--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")

#: a queue whose table only the setup hook creates: a make_queue before the setup would fail
CONFTEST = """
import json, os, sqlite3, threading, time

from pytest_quaero import Queue
from pytest_quaero.core.scenarios import Scenario

SETUP_SECONDS = {setup}
CALLS = []


def pytest_quaero_scenarios():
    return [Scenario("tiny", parents=2, children=5, time_limit=60.0)]


def pytest_quaero_prepare_database(settings, db_path):
    time.sleep(SETUP_SECONDS)  # a slow migration
    conn = sqlite3.connect(db_path)
    conn.execute("create table if not exists migrated (done integer)")
    conn.commit()
    conn.close()
    CALLS.append(("prepare", db_path, os.getpid(), threading.current_thread().name, time.monotonic()))


def pytest_quaero_make_queue(settings, db_path, connection):
    conn = connection()
    conn.execute("select count(*) from migrated")  # fails without the setup
    CALLS.append(("make_queue", db_path, os.getpid(), threading.current_thread().name, time.monotonic()))
    return Queue(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                 max_receive=settings.max_receive)


def pytest_quaero_result(result):
    starts = [worker.start_offset for worker in result.workers]
    print("QUAERO-SETUP " + json.dumps({{"calls": CALLS, "db_path": result.db_path, "pid": os.getpid(),
                                         "extra": {{k: result.extra.get(k) for k in ("setup_seconds",)}},
                                         "execution_time": result.execution_time, "starts": starts}}))
"""


def _report(result: pytest.RunResult) -> dict:
    line = next(line for line in result.outlines if "QUAERO-SETUP " in line)  # after the progress dots
    return json.loads(line.split("QUAERO-SETUP ", 1)[1])


def test_the_setup_runs_once_before_every_queue_on_the_runs_own_file(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(textwrap.dedent(CONFTEST.format(setup=0.0)))
    result = pytester.runpytest(*BASE, *FAST, "--quaero-scenario=tiny", "-s")
    result.assert_outcomes(passed=10)
    seen = _report(result)
    prepares = [call for call in seen["calls"] if call[0] == "prepare"]
    queues = [call for call in seen["calls"] if call[0] == "make_queue"]
    # once, in the pytest process's main thread, before any queue was made
    assert [(pid, thread) for _, _, pid, thread, _ in prepares] == [(seen["pid"], "MainThread")]
    assert queues and min(at for *_, at in queues) >= prepares[0][4]
    # one database path per run, for every hook call: no scratch file for the contract check
    assert {path for _, path, *_ in seen["calls"]} == {seen["db_path"]}
    # the contract check (in the main thread), 2 workers, 2 producers, the monitor
    assert len(queues) == 6 and sum(thread == "MainThread" for _, _, _, thread, _ in queues) == 2
    assert seen["extra"]["setup_seconds"] is not None


def test_the_setup_time_is_neither_a_workers_start_nor_execution_time(pytester: pytest.Pytester) -> None:
    setup = 2.0
    pytester.makeconftest(textwrap.dedent(CONFTEST.format(setup=setup)))
    result = pytester.runpytest(*BASE, *FAST, "--quaero-scenario=tiny", "-s", "-rA")
    seen = _report(result)
    assert seen["extra"]["setup_seconds"] >= setup  # measured, and recorded apart
    # Had the setup been in the pool's clock, the first worker's start (and the run) would be
    # at least the setup's 2 s after it: 10 jobs of 1ms drain in a fraction of that.
    assert all(start is not None and start < setup for start in seen["starts"]), seen["starts"]
    assert seen["execution_time"] < setup, seen
    result.stdout.fnmatch_lines(["PASSED quaero[[]tiny[]]::worker_staggering*"])


def test_a_failing_setup_fails_the_run_with_its_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(textwrap.dedent("""
        from pytest_quaero.core.scenarios import Scenario

        def pytest_quaero_scenarios():
            return [Scenario("tiny", parents=2, children=5, time_limit=60.0)]

        def pytest_quaero_prepare_database(settings, db_path):
            raise RuntimeError("migration 0042 failed")
    """))
    result = pytester.runpytest(*BASE, *FAST, "--quaero-scenario=tiny")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "migration 0042 failed" in result.stdout.str()


@pytest.mark.slow
def test_spawned_workers_see_the_same_single_path(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(textwrap.dedent(CONFTEST.format(setup=0.0)) + textwrap.dedent("""
        import atexit

        def _dump():  # a spawned worker's calls, to a file next to the run's database
            mine = [call for call in CALLS if call[2] == os.getpid()]
            if mine:
                with open(mine[0][1] + f".calls-{os.getpid()}", "w") as out:
                    json.dump(mine, out)

        atexit.register(_dump)
    """))
    result = pytester.runpytest(*BASE, *FAST, "--quaero-scenario=tiny", "--quaero-worker-mode=process", "-s",
                                "--quaero-db=kept.db")
    result.assert_outcomes(passed=10)
    seen = _report(result)
    spawned = [json.loads(path.read_text()) for path in pytester.path.glob("kept.db.calls-*")]
    assert len(spawned) == 2  # both workers' processes
    assert {call[1] for calls in spawned for call in calls} == {seen["db_path"]}
    assert all(call[0] == "make_queue" for calls in spawned for call in calls)  # no setup in a worker
