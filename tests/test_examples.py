"""Every project in examples/ runs as a user runs it: copied out, ``pytest ...`` in its folder.

The runs are subprocesses (``python -m pytest`` in a copy of the example), so the
example's own pyproject.toml, conftest.py and tests are found exactly as on a
user's machine. The two library examples need the ``examples`` extra
(persist-queue, huey); they are skipped, not failed, where it is not installed.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - py310
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FAST = ("--quaero-job-time=1ms", "--quaero-stagger=100ms", "--quaero-poll-interval=50ms")
# The examples are under test here, not the stagger: on a shared 2-core machine another xdist worker's
# load delayed a worker thread's start by 450-550ms on CI (a worker counts as started once its queue is open).
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


def example(tmp_path: Path, name: str) -> Path:
    """A copy of examples/<name>, so a run writes nothing into the repository."""
    target = tmp_path / name
    shutil.copytree(EXAMPLES / name, target, ignore=shutil.ignore_patterns("__pycache__", ".quaero", "*.db*"))
    return target


def pytest_in(folder: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUAERO_", "PYTEST_"))}
    env.pop("GITHUB_STEP_SUMMARY", None)
    return subprocess.run([sys.executable, "-m", "pytest", *BASE, *args], cwd=folder, env=env, text=True,
                          capture_output=True, timeout=timeout)


def outcome(run: subprocess.CompletedProcess[str]) -> str:
    return run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr


def verdicts(run: subprocess.CompletedProcess[str], scenario: str) -> dict[str, str]:
    """The summary table of ``scenario``: criterion title -> PASS/FAIL."""
    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"quaero[{scenario}] ") and " x " in line)
    table: dict[str, str] = {}
    for line in lines[start + 2:]:
        if (not line.startswith("  ") or line.startswith("  database kept")
                or not line.rstrip().endswith(("PASS", "FAIL"))):
            break
        table[re.split(r"\s{2,}", line.strip())[0]] = line.rstrip()[-4:]
    return table


# ---------------------------------------------------------------- examples/minimal


def test_minimal_project_light(tmp_path: Path) -> None:
    run = pytest_in(example(tmp_path, "minimal"), "--quaero-scenario=light", *FAST, *RELAXED)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 13 passed" in outcome(run)  # its 3 tests + the 10 criterion items
    assert "quaero[light] 5 x 20 = 100 jobs, 2 thread workers: PASS" in run.stdout
    assert "stagger 100ms" in run.stdout  # the command line won over the example's pyproject.toml


@pytest.mark.slow
def test_minimal_project_medium_exactly_as_the_readme_says(tmp_path: Path) -> None:
    # `cd examples/minimal && pytest --quaero-scenario=medium`: the template's own timings
    run = pytest_in(example(tmp_path, "minimal"), "--quaero-scenario=medium")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "quaero: scenarios medium; 2 workers (thread), stagger 500ms, busy_timeout 10000ms" in run.stdout
    assert " 13 passed" in outcome(run)


# ---------------------------------------------------------------- the two queue libraries


def test_persist_queue_runs_through_the_scenario(tmp_path: Path) -> None:
    pytest.importorskip("persistqueue")
    run = pytest_in(example(tmp_path, "persist_queue"), "--quaero-scenario=light", *FAST, *RELAXED, "-v")
    table = verdicts(run, "light")
    # What does not depend on a race must hold; duplicates are the library's finding and vary
    # from run to run (README: "What it finds"), so they are reported here, not asserted.
    for title in ("SQLITE_BUSY Errors", "Queue Deletion Success Rate", "Hierarchy Integrity", "Job Completion Rate"):
        assert table[title] == "PASS", (title, run.stdout)
    assert set(table) >= {"Jobs Processed Twice", "Throughput"}
    # the adapter's own tests, including the deterministic form of the finding, pass
    assert "test_adapter.py::test_adapter_meets_the_contract PASSED" in run.stdout
    assert "test_adapter.py::test_a_new_queue_object_hands_out_messages_another_worker_holds PASSED" in run.stdout
    assert run.returncode in (0, 1), run.stdout + run.stderr  # 1: only if duplicates were found


#: huey keeps SQLite's default synchronous=FULL, so each dequeue fsyncs the WAL while it holds the write
#: lock, and SqliteHuey's constructor (the worker's queue open) waits up to its 5s busy timeout behind those
#: commits: both then measure the disk, not huey. Under a CPU spinner plus an fsync writer (another xdist
#: worker's I/O) queue_receive reached p95 25ms, p99 60ms, and a second worker opened its queue 1.7s late.
#: A lock held across a poll or a job, or a worker that never starts, still fails.
HUEY_DISK_BOUND = ("--quaero-threshold=stagger_tolerance=5s", "--quaero-threshold=max_lock_hold_p95=50ms",
                   "--quaero-threshold=max_lock_hold=500ms")


def test_huey_passes_every_criterion(tmp_path: Path) -> None:
    pytest.importorskip("huey")
    run = pytest_in(example(tmp_path, "huey_sqlite"), "--quaero-scenario=light", *FAST, *RELAXED, *HUEY_DISK_BOUND)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " 11 passed" in outcome(run)  # 10 criteria + the adapter's contract test
    assert set(verdicts(run, "light").values()) == {"PASS"}


@pytest.mark.slow  # a whole pytest session of its own: CI runs it with -m slow
def test_kombu_sqlalchemy_runs_through_the_scenario(tmp_path: Path) -> None:
    pytest.importorskip("kombu")
    pytest.importorskip("sqlalchemy")
    run = pytest_in(example(tmp_path, "kombu_sqlalchemy"), "--quaero-scenario=light", *FAST, *RELAXED, "-v")
    table = verdicts(run, "light")
    # Write Lock Hold is the library's finding (its ORM claim holds the lock ~3-15ms) and varies
    # with the machine's load (README: "What it finds"), so it is reported here, not asserted.
    for title in ("SQLITE_BUSY Errors", "Queue Deletion Success Rate", "Hierarchy Integrity", "Job Completion Rate",
                  "Jobs Processed Twice", "Worker Health"):
        assert table[title] == "PASS", (title, run.stdout)
    assert "100.0% (100/100 acknowledged)" in run.stdout  # a retaining queue, read as one
    assert "test_adapter.py::test_a_fetched_message_is_never_delivered_again PASSED" in run.stdout
    assert run.returncode in (0, 1), run.stdout + run.stderr


@pytest.mark.slow  # a whole pytest session of its own: CI runs it with -m slow
def test_django_q2_runs_through_the_scenario(tmp_path: Path) -> None:
    pytest.importorskip("django_q")
    run = pytest_in(example(tmp_path, "django_q2"), "--quaero-scenario=light", *FAST, *RELAXED, "-v")
    table = verdicts(run, "light")
    for title in ("SQLITE_BUSY Errors", "Queue Deletion Success Rate", "Hierarchy Integrity", "Job Completion Rate",
                  "Jobs Processed Twice", "Worker Health"):
        assert table[title] == "PASS", (title, run.stdout)
    assert "test_adapter.py::test_adapter_meets_the_contract PASSED" in run.stdout
    assert run.returncode in (0, 1), run.stdout + run.stderr


# ---------------------------------------------------------------- examples/custom


@pytest.mark.parametrize("mode", ["thread", pytest.param("process", marks=pytest.mark.slow)])
def test_custom_handler_scenario_criterion_and_observer(tmp_path: Path, mode: str) -> None:
    folder = example(tmp_path, "custom")
    kept = folder / "burst.db"
    run = pytest_in(folder, "--quaero-scenario=burst", f"--quaero-worker-mode={mode}", f"--quaero-db={kept}",
                    "--quaero-job-time=1ms", *RELAXED, "-v")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "quaero[burst]::latency_p95 PASSED" in run.stdout
    assert "quaero[burst] 20 x 5 = 100 jobs" in run.stdout
    conn = sqlite3.connect(f"file:{kept}?mode=ro", uri=True)  # the run is over: no connection of ours is open
    try:
        pages, workers = conn.execute("select count(*), count(distinct worker) from pages").fetchone()
    finally:
        conn.close()
    assert pages == 100 and workers >= 1  # the handler hook did the work, in every worker
    lines = [json.loads(line) for line in (folder / ".quaero" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["scenario"], line["jobs_completed"]) for line in lines] == [("burst", 100)]


# ---------------------------------------------------------------- tox and CI files


def _tox(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return parser


@pytest.mark.parametrize("path", [ROOT / "tox.ini", EXAMPLES / "ci" / "tox.ini"])
def test_tox_matrix_covers_pythons_scenarios_and_xdist(path: Path) -> None:
    tox = _tox(path)
    envlist = tox["tox"]["envlist"]
    assert "py3{10,11,12,13}" in envlist and "{light,medium,heavy}" in envlist and "{nodist,xdist}" in envlist
    assert tox["tox"]["skip_missing_interpreters"] == "true"
    commands = tox["testenv"]["commands"]
    assert "{posargs" in commands and "-n 2" in commands
    for scenario in ("light", "medium", "heavy"):
        assert f"{scenario}: QUAERO_SCENARIO = {scenario}" in tox["testenv"]["set_env"]


def test_top_tox_tests_lowest_and_highest_pytest() -> None:
    tox = _tox(ROOT / "tox.ini")
    assert "{pytestmin,pytestmax}" in tox["tox"]["envlist"]
    deps = tox["testenv"]["deps"]
    assert "pytestmin: pytest==8.0.*" in deps and "pytestmax: pytest>=9,<10" in deps
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "pytest>=8" in project["dependencies"]  # the lowest the matrix tests is the lowest allowed


def test_ci_workflow_runs_the_tox_environments() -> None:
    workflow = (EXAMPLES / "ci" / ".github" / "workflows" / "quaero.yml").read_text()
    assert 'python: ["3.10", "3.11", "3.12", "3.13"]' in workflow and "scenario: [light, medium]" in workflow
    assert "run: tox -e " in workflow and "${{ matrix.scenario }}-xdist" in workflow


def test_the_examples_extra_installs_both_libraries() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {dep.split(">")[0] for dep in extras["examples"]} >= {"persist-queue", "huey"}
