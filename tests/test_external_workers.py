"""Worker pools in any language (issue 15): the plugin drives a command speaking the JSON-lines
protocol, measures it from the database plus its events, and turns every bad worker into one
clear paragraph with the database kept. The workers here are real processes: the shipped Python
example (examples/external_python/worker.py, standard library only) and small broken ones."""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import external, run  # noqa: F401

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
FAST = ("--quaero-job-time=1ms", "--quaero-stagger=50ms", "--quaero-poll-interval=20ms",
        "--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "external_python" / "worker.py"
PYTHON_WORKER = f"{shlex.quote(sys.executable)} {shlex.quote(str(EXAMPLE))}"


def worker_script(pytester: pytest.Pytester, name: str, body: str) -> str:
    """A worker program written for one test, as a command line."""
    path = pytester.path / name
    path.write_text(textwrap.dedent(body))
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def run_light(pytester: pytest.Pytester, command: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE, "--quaero-scenario=light", *FAST, f"--quaero-worker-command={command}",
                              "--quaero-json=results.json", *args)


def results(pytester: pytest.Pytester) -> dict:  # type: ignore[type-arg]
    document = json.loads((pytester.path / "results.json").read_text())
    return document["results"][0]


# ------------------------------------------------------------------ a working external pool


def test_the_python_example_worker_passes_every_criterion(pytester: pytest.Pytester) -> None:
    result = run_light(pytester, PYTHON_WORKER, "--quaero-workers=3")
    result.assert_outcomes(passed=10)
    run_data = results(pytester)
    pool = run_data["extra"]["pool"]
    assert pool["kind"] == "external" and pool["processes"] == 1
    assert pool["hello"]["language"] == "python" and pool["hello"]["protocol"] == 1
    assert pool["exit_codes"] == [0] and pool["killed"] == []
    names = [worker["name"] for worker in run_data["workers"]]
    assert names == ["python-1", "python-2", "python-3"]
    # the database says what finished; the events say who did it
    assert sum(worker["jobs"] for worker in run_data["workers"]) == 100
    assert all(worker["start_offset"] is not None for worker in run_data["workers"])
    # the workers' connections live in another process: the lock hold is not judged on the producers alone
    lock_hold = next(v for v in run_data["verdicts"] if v["criterion"] == "write_lock_hold")
    assert lock_hold["passed"] and lock_hold["measured"].startswith("not measured: the workers ran in another process")
    assert PYTHON_WORKER in lock_hold["measured"]


def test_one_process_per_worker(pytester: pytest.Pytester) -> None:
    result = run_light(pytester, PYTHON_WORKER, "--quaero-worker-processes=per-worker")
    result.assert_outcomes(passed=10)
    pool = results(pytester)["extra"]["pool"]
    assert pool["processes"] == 2 and pool["exit_codes"] == [0, 0]


def test_a_mixed_pool_says_who_did_what(pytester: pytest.Pytester) -> None:
    result = run_light(pytester, PYTHON_WORKER, "--quaero-builtin-workers=2")
    result.assert_outcomes(passed=10)
    run_data = results(pytester)
    assert run_data["extra"]["pool"]["kind"] == "mixed"
    workers = {worker["name"]: worker["jobs"] for worker in run_data["workers"]}
    assert list(workers) == ["python-1", "python-2", "JobWorker-3", "JobWorker-4"]
    assert sum(workers.values()) == 100


def test_lock_errors_come_from_the_workers_events(pytester: pytest.Pytester) -> None:
    """Every fix off: the command's own lock errors fail SQLITE_BUSY Errors, counted per operation."""
    result = run_light(pytester, PYTHON_WORKER, "--quaero-disable=all", "--quaero-workers=4",
                       "--quaero-job-time=0", "--quaero-visibility-timeout=1s")
    result.stdout.fnmatch_lines(["*SQLITE_BUSY Errors*FAIL*"])
    retry = results(pytester)["retry"]
    worker_ops = {"connect", "queue_receive", "save_job", "progress_update", "queue_delete"}
    busy_in_workers = sum(data["busy_events"] for op, data in retry.items() if op in worker_ops)
    assert busy_in_workers > 0, retry
    codes = {code for data in retry.values() for code in data["codes"]}
    assert codes <= {"SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT", "SQLITE_LOCKED", "SQLITE_BUSY_RECOVERY"}


# ------------------------------------------------------------------ bad workers


def test_a_command_that_is_not_found_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = run_light(pytester, "no-such-worker-program --fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quaero-worker-command=no-such-worker-program --fast (command line): invalid "
                                 "value for --quaero-worker-command; allowed: a command line whose program is on "
                                 "PATH or is an executable file*"])
    assert "Traceback" not in result.stderr.str()


def test_a_file_that_is_not_executable_is_a_usage_error(pytester: pytest.Pytester) -> None:
    plain = pytester.path / "worker.sh"
    plain.write_text("#!/bin/sh\n")
    result = run_light(pytester, str(plain))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid value for --quaero-worker-command*"])


def assert_could_not_run(result: pytest.RunResult, *lines: str) -> None:
    result.assert_outcomes(errors=1, skipped=9)
    result.stdout.fnmatch_lines([*lines, "database kept: *quaero.db"])
    assert "Traceback" not in result.stdout.str()


def test_a_command_that_exits_at_start_shows_its_stderr(pytester: pytest.Pytester) -> None:
    command = worker_script(pytester, "dies.py", """
        import sys
        print("config error: QUAERO_QUEUE_NAME is not what I expected", file=sys.stderr)
        sys.exit(3)
    """)
    assert_could_not_run(run_light(pytester, command),
                         "*worker command (*dies.py) exited with code 3 before saying hello; the end of its "
                         "stderr: config error: QUAERO_QUEUE_NAME is not what I expected. The database is kept*")


HELLO = ('{"event": "hello", "protocol": 1, "language": "python", "runtime": "3"}')


def test_a_line_that_is_not_protocol_is_named_with_its_number(pytester: pytest.Pytester) -> None:
    command = worker_script(pytester, "chatty.py", f"""
        import os
        out = os.fdopen(int(os.environ["QUAERO_EVENTS_FD"]), "w")
        out.write({HELLO!r} + "\\n")
        out.write("Starting 2 workers...\\n")
        out.flush()
        import time; time.sleep(30)
    """)
    assert_could_not_run(run_light(pytester, command),
                         "*worker command: line 2 of its events is not valid protocol: not JSON (*): "
                         "Starting 2 workers...*")


def test_a_worker_that_never_says_hello(pytester: pytest.Pytester) -> None:
    command = worker_script(pytester, "silent.py", "import time\ntime.sleep(60)\n")
    assert_could_not_run(run_light(pytester, command, "--quaero-worker-start-timeout=500ms"),
                         "*worker command (*silent.py) did not say hello within 0.5s*QUAERO_EVENTS_FD*")


def test_another_protocol_version_is_refused(pytester: pytest.Pytester) -> None:
    command = worker_script(pytester, "future.py", """
        import os, time
        out = os.fdopen(int(os.environ["QUAERO_EVENTS_FD"]), "w")
        out.write('{"event": "hello", "protocol": 2, "language": "rust", "runtime": "1.80"}\\n')
        out.flush()
        time.sleep(30)
    """)
    assert_could_not_run(run_light(pytester, command),
                         "*line 1 of its events is not valid protocol: it speaks protocol version 2, this "
                         "plugin speaks version 1*")


#: the example worker, ignoring SIGTERM: a worker whose graceful stop is broken
STUBBORN = f"""
import runpy, signal, sys
signal.signal = lambda *args: None          # the example's SIGTERM handler is never installed...
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})  # ...and SIGTERM never arrives
sys.argv = [{str(EXAMPLE)!r}]
runpy.run_path({str(EXAMPLE)!r}, run_name="__main__")
"""


def test_a_worker_that_ignores_sigterm_is_killed_and_fails_worker_health(pytester: pytest.Pytester) -> None:
    command = worker_script(pytester, "stubborn.py", STUBBORN)
    result = run_light(pytester, command, "--quaero-worker-stop-grace=300ms")
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines(["*Worker Health*2 crashed*"])
    pool = results(pytester)["extra"]["pool"]
    assert pool["killed"] == ["worker command was still running 0.3s after SIGTERM (--quaero-worker-stop-grace): "
                              "killed"]


#: the example worker, whose process dies (as on an OOM kill) after claiming its 30th job
CRASHES = f"""
import os, runpy, sys
sys.argv = [{str(EXAMPLE)!r}]
example = runpy.run_path({str(EXAMPLE)!r}, run_name="example")
claimed = []
original = example["Worker"].job

def job(self, conn, message_id, body, received):
    claimed.append(message_id)
    if len(claimed) == 30:
        self.emit("claimed", message_id=message_id, job_id="(dying)", delivery=received)
        os._exit(9)
    return original(self, conn, message_id, body, received)

example["Worker"].job = job
sys.exit(example["main"]())
"""


def test_a_worker_process_that_dies_mid_run(pytester: pytest.Pytester) -> None:
    """Its claimed job stays unfinished (never counted completed) and Worker Health names the exit."""
    command = worker_script(pytester, "crashes.py", CRASHES)
    result = run_light(pytester, command, "--quaero-visibility-timeout=60s")
    result.stdout.fnmatch_lines(["*Worker Health*crashed*", "*Job Completion Rate*FAIL*"])
    run_data = results(pytester)
    # 29 finished before the 30th claim at most (the other worker may have been mid-job): the rest,
    # the dying claim included, are still in the queue, none counted completed. The process dies with
    # both workers, so the other one may have finished its job and not yet deleted its message: one
    # message more than the unfinished jobs at most, and never one deleted without its job finished.
    assert run_data["jobs_completed"] <= 29
    assert 0 <= run_data["messages_left"] - (100 - run_data["jobs_completed"]) <= 1, run_data["messages_left"]
    crashed = run_data["extra"]["crashed_workers"]
    assert crashed and "exited with code 9 before the run stopped it" in crashed[0]["error"]


def test_the_environment_names_every_setting(pytester: pytest.Pytester) -> None:
    """What a worker is told: the README's table, from the effective settings."""
    from pytest_quaero.core.settings import resolve

    settings = resolve({"workers": "3", "busy_timeout_ms": "250", "retry_attempts": "4", "retry_backoff": "50ms",
                        "job_time": "5ms..20ms", "wal": "false", "stagger": "0"}, {}, {})
    env = external.worker_environment(settings, "/tmp/x.db", 1, 2)
    assert env["QUAERO_WORKERS"] == "2" and env["QUAERO_WORKER_INDEX_BASE"] == "1"
    assert env["QUAERO_POOL_WORKERS"] == "3" and env["QUAERO_BUSY_TIMEOUT_MS"] == "250"
    assert env["QUAERO_JOURNAL_MODE"] == "DELETE" and env["QUAERO_JOB_TIME_MS"] == "5..20"
    assert env["QUAERO_RETRY_ATTEMPTS"] == "4" and env["QUAERO_RETRY_BACKOFF_MS"] == "50"
    assert env["QUAERO_DELETE_RETRY_ATTEMPTS"] == "3" and env["QUAERO_DELETE_RETRY_BACKOFF_MS"] == "100"
    assert env["QUAERO_DISABLED_FIXES"] == "wal,stagger"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text().splitlines()
    assert set(env) <= {line.split("`")[1] for line in readme if line.startswith("| `QUAERO_")}


assert os.access(EXAMPLE, os.X_OK), "the example worker must stay executable"
