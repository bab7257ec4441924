"""The command line outside pytest: ``pytest-quaero`` / ``python -m pytest_quaero``.

Run as a CI script would run it (a subprocess), reading what it prints: the version, the
comparison as text, as Markdown to post on a pull request, as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.results_json import build_document, write_atomic


def _result(*, seconds: float, attempts: int = 100) -> RunResult:
    """A light result whose throughput is 100 jobs / ``seconds``; ``attempts`` is its counted write."""
    result = RunResult(scenario="light", parents=5, children_per_parent=20, run_id="r", settings={"workers": 2})
    result.execution_time = seconds
    result.jobs_completed = 100
    result.processing_times = [0.01] * 20
    result.latencies = [0.02] * 20
    result.retry = {"save_job": {"operations": 100, "attempts": attempts, "busy_events": 0, "retried_operations": 0,
                                 "successful_retries": 0, "exhausted": 0, "other_errors": 0, "fast_busy": 0,
                                 "busy_wait_seconds": 0.0, "codes": {}}}
    return result


@pytest.fixture
def documents(tmp_path: Path) -> tuple[Path, Path]:
    old = write_atomic(tmp_path / "old.json", build_document([_result(seconds=1.0)]))
    new = write_atomic(tmp_path / "new.json", build_document([_result(seconds=1.5)]))  # throughput -33%
    return old, new


def _run(*args: str, cwd: Path, program: tuple[str, ...] = (sys.executable, "-m", "pytest_quaero")
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*program, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [("--version",), ("compare", "--version")])
def test_version_is_the_installed_distributions(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = _run(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == version("pytest-quaero")
    assert done.stdout.startswith("python -m pytest_quaero")


def test_console_script_runs_the_same_command(documents: tuple[Path, Path], tmp_path: Path) -> None:
    script = shutil.which("pytest-quaero", path=str(Path(sys.executable).parent))
    assert script is not None, "pytest-quaero is not installed as a console script (pip install -e .)"
    shown = _run("--version", cwd=tmp_path, program=(script,))
    assert shown.returncode == 0 and shown.stdout.strip() == f"pytest-quaero {version('pytest-quaero')}"
    old, new = documents
    done = _run("compare", str(old), str(new), "--fail=throughput:10%", cwd=tmp_path, program=(script,))
    assert done.returncode == 1 and "light-5x20: REGRESSION" in done.stdout
    usage = _run(cwd=tmp_path, program=(script,))
    assert usage.returncode == 2 and usage.stderr.startswith("usage: pytest-quaero")


def test_markdown_output_is_a_table_a_pull_request_renders(documents: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = documents
    done = _run("compare", str(old), str(new), "--fail=throughput:10%", "--format=markdown", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "### pytest-quaero compare: ❌ 1 scenario regressed"
    assert "`throughput:10%`" in lines[2]
    heading = next(line for line in lines if line.startswith("#### "))
    assert heading.startswith("#### ❌ light-5x20: throughput")
    table = [line for line in lines if line.startswith("|")]
    assert table[0] == "| Metric | Before | Now | Change | Noise | Limit | Status |"
    assert set(table[1]) <= set("|-: ")
    assert all(line.count("|") == 8 for line in table), table  # every row has the header's 7 cells
    throughput = next(line for line in table if line.startswith("| throughput |"))
    assert throughput.endswith("| ❌ FAIL |") and "100.0" in throughput and "66.7" in throughput
    # and a passing comparison says so in its first line
    fine = _run("compare", str(new), str(old), "--fail=throughput:10%", "--format=markdown", cwd=tmp_path)
    assert fine.returncode == 0 and fine.stdout.splitlines()[0] == "### pytest-quaero compare: ✅ no regression"


def test_json_output_holds_every_row_and_the_exit_code(documents: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = documents
    done = _run("compare", str(old), str(new), "--fail=throughput:10%", "--format=json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    assert document["passed"] is False and document["exit_code"] == 1 and document["rules"] == ["throughput:10%"]
    assert document["version"] == version("pytest-quaero")
    (scenario,) = document["scenarios"]
    assert scenario["key"] == "light-5x20" and scenario["status"] == "regression"
    rows = {row["metric"]: row for row in scenario["rows"]}
    assert rows["throughput"]["passed"] is False
    assert rows["throughput"]["before"] == pytest.approx(100.0) and rows["throughput"]["now"] == pytest.approx(66.67,
                                                                                                             rel=1e-3)


def test_a_missing_baseline_is_an_entry_of_its_own(tmp_path: Path) -> None:
    old = write_atomic(tmp_path / "old.json", build_document([]))
    new = write_atomic(tmp_path / "new.json", build_document([_result(seconds=1.0)]))
    done = _run("compare", str(old), str(new), "--require-baseline", "--format=json", cwd=tmp_path)
    assert done.returncode == 1
    (scenario,) = json.loads(done.stdout)["scenarios"]
    assert scenario["status"] == "no baseline" and scenario["rows"] == []


def test_without_rules_the_line_names_the_clis_own_option(tmp_path: Path) -> None:
    # no counts in either document (no per-job figures), no --fail: nothing is gated
    plain = build_document([_result(seconds=1.0)])
    for entry in plain["results"]:
        entry.pop("counts", None)
        entry.get("extra", {}).pop("counts", None)
    old = write_atomic(tmp_path / "old.json", plain)
    new = write_atomic(tmp_path / "new.json", plain)
    done = _run("compare", str(old), str(new), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no --fail rule" in done.stdout
    assert "--quaero-compare-fail" not in done.stdout + done.stderr
