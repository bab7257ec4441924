"""Ctrl-C, SIGTERM and kills mid-run: prompt stop, kept files printed, no job lost, no process left.

The pool and run tests work on real database files in this process; the plugin tests run
pytest in-process (pytester) or as a real subprocess that gets a real signal mid-run.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_quaero.core import db
from pytest_quaero.core.jobs import Job, JobContext, JobInterrupted, SimulatedWork, encode_job
from pytest_quaero.core.pool import WorkerPool
from pytest_quaero.core.queue import Queue
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import JobStore

#: as in test_plugin: no plugin whose start-up would slow the inner sessions down
BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
FAST = ("--quaero-stagger=100ms", "--quaero-poll-interval=50ms")


def _settings(**changes: Any) -> Settings:
    return Settings().replace(source="test", **{"workers": 2, "stagger": "100ms", "poll_interval": "50ms",
                                                **changes})


def _seed(path: Path, settings: Settings, children: int) -> None:
    conn = db.connect(path, settings)
    try:
        store, queue = JobStore(conn), Queue(conn, settings.queue_name,
                                             visibility_timeout=settings.visibility_timeout)
        store.save_parent("p1", "Crawl job 1", children)
        for c in range(children):
            body = encode_job(f"p1-c{c}", "p1", f"http://test-server/{c}")
            store.create_child(f"p1-c{c}", "p1", f"http://test-server/{c}", enqueue=functools.partial(queue.send, body))
    finally:
        conn.close()


def _query(path: Path | str, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def _running_children(path: Path | str) -> list[str]:
    try:
        rows = _query(path, "select id from crawl_jobs where parent_id != '' and status = 'running'")
        return [row[0] for row in rows]
    except sqlite3.Error:  # tables not made yet
        return []


def _no_job_lost(path: Path | str, children: int) -> None:
    """Every child is completed with its message deleted, or unfinished with its message still queued."""
    completed = _query(path, "select count(*) from crawl_jobs where parent_id != '' and status = 'completed'")[0][0]
    messages = _query(path, "select count(*) from goqite")[0][0]
    assert completed + messages == children, (completed, messages)
    assert _query(path, "select count(*) from crawl_jobs where parent_id != ''")[0][0] == children


# ---------------------------------------------------------------- the pool: simulated work waits on the cancel


def test_simulated_work_waits_on_the_cancel_signal(path: Path) -> None:
    cancel = threading.Event()
    context = JobContext("JobWorker-1", 0, Settings(), str(path), cancel=cancel)
    job = Job("c1", "p1", "http://x/1", "crawler_url", "m1", 1, time.time())
    threading.Timer(0.1, cancel.set).start()
    began = time.monotonic()
    with pytest.raises(JobInterrupted):
        SimulatedWork(30, 30)(job, context)
    assert time.monotonic() - began < 2


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_stopping_the_pool_cuts_a_long_job_short_and_loses_nothing(path: Path, mode: str) -> None:
    settings = _settings(job_time="30s", visibility_timeout="500ms", worker_mode=mode)
    _seed(path, settings, 4)
    pool = WorkerPool(str(path), settings)
    pool.start()
    try:
        held = _wait_for("both workers in a job", lambda: _running_children(path)[1:] and _running_children(path))
    finally:
        began = time.monotonic()
        pool.stop(cancel=True)
        took = time.monotonic() - began
    assert took < 1.5, f"the pool took {took:.1f}s to stop"  # was: the whole 30 s job
    assert not [e for e in pool.poll_events() if e[0] == "job"]  # nothing finished, nothing counted
    # not completed, message not deleted: delivered again once the visibility timeout passes
    assert sorted(held) == sorted(_running_children(path))
    assert _query(path, "select count(*) from goqite")[0][0] == 4
    assert sorted(_query(path, "select received from goqite")) == [(0,), (0,), (1,), (1,)]
    time.sleep(0.6)
    conn = db.connect(path, settings)
    try:
        queue = Queue(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout)
        again = [queue.receive() for _ in range(4)]
    finally:
        conn.close()
    assert sorted(m.received for m in again if m is not None) == [1, 1, 2, 2]


def test_a_graceful_stop_lets_the_job_in_progress_finish(path: Path) -> None:
    # restart-pool's stop: "every worker finishes its job and stops"
    settings = _settings(job_time="400ms", workers=1)
    _seed(path, settings, 2)
    pool = WorkerPool(str(path), settings)
    pool.start()
    try:
        _wait_for("a job in progress", lambda: _running_children(path))
    finally:
        pool.stop()
    assert [e[3] for e in pool.poll_events() if e[0] == "job"] == ["completed"]
    assert _query(path, "select count(*) from goqite")[0][0] == 1


# ---------------------------------------------------------------- the run's clock stops at the drain


class _SlowStopPool(WorkerPool):
    """Stopping takes a second, as ten thousand idle threads do."""

    def stop(self, timeout: float = 60.0, *, cancel: bool = False) -> None:
        super().stop(timeout, cancel=cancel)
        time.sleep(1.0)


def test_execution_time_ends_when_the_queue_drains_not_after_the_pool_stopped(tmp_path: Path) -> None:
    settings = _settings(job_time="1ms")
    result = run_scenario(Scenario("tiny", 2, 5), settings, run_dir=tmp_path, pool_factory=_SlowStopPool)
    assert result.jobs_completed == 10
    assert result.extra["pool_stop_seconds"] >= 1.0
    assert result.execution_time < result.total_duration - 0.9
    assert result.execution_time < 1.0, result.execution_time


# ---------------------------------------------------------------- the session: SIGTERM handler, kept files printed

_ON_FIRST_JOB = """
import _thread, os, signal

sent = []

def pytest_quaero_handle_job(job, context):
    if not sent:
        sent.append(job.job_id)
        {interrupt}
    context.pause(30)  # a long job: cut short when the pool stops
    return True
"""


def _in_main_thread() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can be set in the main thread only")


def test_the_sigterm_handler_is_installed_only_while_a_quaero_session_runs(pytester: pytest.Pytester) -> None:
    _in_main_thread()
    before = signal.getsignal(signal.SIGTERM)
    pytester.makepyfile(test_handlers="""
        import signal

        def test_plain():
            assert getattr(signal.getsignal(signal.SIGTERM), "__name__", "") != "_on_sigterm"

        def test_with_quaero_run(quaero_run):
            assert getattr(signal.getsignal(signal.SIGTERM), "__name__", None) == "_on_sigterm"
    """)
    result = pytester.runpytest(*BASE, "test_handlers.py::test_plain")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest(*BASE)
    result.assert_outcomes(passed=2)
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the session


def test_sigterm_during_quaero_run_ends_like_ctrl_c_and_prints_the_kept_files(pytester: pytest.Pytester) -> None:
    _in_main_thread()
    before = signal.getsignal(signal.SIGTERM)
    pytester.makeconftest(_ON_FIRST_JOB.format(
        interrupt="assert signal.getsignal(signal.SIGTERM).__name__ == '_on_sigterm'; "
                  "os.kill(os.getpid(), signal.SIGTERM)"))
    pytester.makepyfile(test_load="""
        def test_load(quaero_run):
            quaero_run("light")

        def test_never_reached():
            pass
    """)
    began = time.monotonic()
    result = pytester.runpytest(*BASE, *FAST, "--quaero-job-time=30s")
    assert time.monotonic() - began < 15
    assert result.ret == pytest.ExitCode.INTERRUPTED
    output = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*= quaero: interrupted runs (files kept) =*",
        "quaero[[]light[]] interrupted by SIGTERM after *s: no verdict; its files are kept as the interrupt left "
        "them (unfinished jobs keep their messages)",
        "  database kept: */01-light/quaero.db",
        "  log kept:      */01-light/quaero.log",
        "  inspect with:  sqlite3 */01-light/quaero.db",
        "*! pytest_quaero.session.Terminated: SIGTERM received: the session stops as on Ctrl-C (exit code 2) !*",
    ])
    assert "test_never_reached" not in output
    kept = next(line.split(": ", 1)[1] for line in result.outlines if line.startswith("  database kept: "))
    assert Path(kept).is_file()
    _no_job_lost(kept, 100)
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_during_criterion_items_prints_the_kept_files(pytester: pytest.Pytester) -> None:
    _in_main_thread()
    # pytest may run with SIGINT ignored (a background job): this session gets Python's Ctrl-C handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        pytester.makeconftest(_ON_FIRST_JOB.format(interrupt="_thread.interrupt_main()"))
        result = pytester.runpytest(*BASE, *FAST, "--quaero-job-time=30s", "--quaero-scenario=light",
                                     no_reraise_ctrlc=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "quaero[[]light[]] interrupted by SIGINT (Ctrl-C) after *s: no verdict; *",
        "  database kept: */01-light/quaero.db",
        "*! KeyboardInterrupt !*",
    ])
    kept = next(line.split(": ", 1)[1] for line in result.outlines if line.startswith("  database kept: "))
    _no_job_lost(kept, 100)


# ---------------------------------------------------------------- real signals to a real pytest process

_MAIN = ("import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "sys.exit(pytest.main())")


def _start(folder: Path, *args: str) -> subprocess.Popen[str]:
    # its own process group, so the test can signal the group (a terminal's Ctrl-C) and find leftovers
    return subprocess.Popen(
        [sys.executable, "-c", _MAIN, *BASE, f"--basetemp={folder / 'bt'}", *FAST, *args],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def _group_gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _first_db(folder: Path) -> Path:
    def found() -> Path | None:
        return next(iter((folder / "bt").glob("quaero-*/01-light/quaero.db")), None)

    database: Path = _wait_for("the run's database", found)
    return database


@pytest.mark.parametrize(("signum", "to_group", "mode"), [
    pytest.param(signal.SIGINT, False, "thread", id="sigint-thread"),
    pytest.param(signal.SIGTERM, False, "thread", id="sigterm-thread"),
    # spawning worker processes costs a few seconds more
    pytest.param(signal.SIGTERM, False, "process", id="sigterm-process", marks=pytest.mark.slow),
    # a terminal's Ctrl-C reaches the worker processes too
    pytest.param(signal.SIGINT, True, "process", id="ctrl-c-group-process", marks=pytest.mark.slow),
])
def test_a_signal_mid_run_stops_at_once_prints_the_kept_files_and_leaves_nothing(
        tmp_path: Path, signum: int, to_group: bool, mode: str) -> None:
    process = _start(tmp_path, "--quaero-scenario=light", "--quaero-job-time=30s", f"--quaero-worker-mode={mode}")
    try:
        database = _first_db(tmp_path)
        _wait_for("both workers in a job", lambda: len(_running_children(database)) == 2)
        began = time.monotonic()
        if to_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
        took = time.monotonic() - began
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert took < 10, f"{took:.1f}s to return after the signal (30 s jobs)\n{output}"
    name = "SIGINT (Ctrl-C)" if signum == signal.SIGINT else "SIGTERM"
    assert f"quaero[light] interrupted by {name} after " in output, output
    assert f"  database kept: {database}" in output
    assert f"  log kept:      {database.parent / 'quaero.log'}" in output
    assert database.is_file()
    assert "Traceback" not in output
    assert _group_gone(process.pid), "a process of the run outlived pytest"
    _no_job_lost(database, 100)


@pytest.mark.slow
def test_a_killed_pytest_leaves_no_worker_process(tmp_path: Path) -> None:
    process = _start(tmp_path, "--quaero-scenario=light", "--quaero-job-time=30s", "--quaero-worker-mode=process")
    try:
        database = _first_db(tmp_path)
        _wait_for("both workers in a job", lambda: len(_running_children(database)) == 2)
        process.kill()  # SIGKILL: no handler, no cleanup; the spawned workers notice their pool is gone
        process.communicate(timeout=30)
        assert _group_gone(process.pid, timeout=5), "worker processes outlived a killed pytest"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    _no_job_lost(database, 100)


def test_interrupt_main_is_what_ctrl_c_does() -> None:
    # the in-process tests above stand in for Ctrl-C with _thread.interrupt_main(): it raises the
    # KeyboardInterrupt in the main thread, as SIGINT does, when Python's SIGINT handler is set
    _in_main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            _thread.interrupt_main()
            time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, previous)
