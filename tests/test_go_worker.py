"""The reference Go worker (examples/go_goqite: maragu.dev/goqite v0.4.0 on modernc.org/sqlite) under the
plugin (issue 15): the template's scenarios pass with the lock fixes on, fail SQLITE_BUSY Errors with them
off (real busy errors, counted from the worker's own events), and --quaero-compare-fixes gives the
before/after table for Go. Built once per machine (cached by its sources); skipped without a Go toolchain."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import external, run  # noqa: F401
from pytest_quaero.core.gobuild import resolve_command

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain on PATH (the reference worker is Go)"),
]

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
MODULE = Path(__file__).resolve().parent.parent / "examples" / "go_goqite"


@pytest.fixture(scope="module")
def go_worker() -> str:
    """The built binary (the first build downloads goqite and modernc.org/sqlite: about two minutes)."""
    return resolve_command(str(MODULE))[0]


def test_the_template_scenarios_pass_with_the_go_worker(pytester: pytest.Pytester, go_worker: str) -> None:
    result = pytester.runpytest(*BASE, "--quaero-scenario=light,medium,heavy", f"--quaero-worker-command={go_worker}",
                                "--quaero-report=report.md", "--quaero-json=results.json")
    result.assert_outcomes(passed=30)
    runs = json.loads((pytester.path / "results.json").read_text())["results"]
    for run_data in runs:
        hello = run_data["extra"]["pool"]["hello"]
        assert hello["language"] == "go" and hello["libraries"]["maragu.dev/goqite"] == "v0.4.0"
        # the pragmas a comparison with the Python queue needs to be fair, read back by the worker itself
        assert hello["pragmas"]["journal_mode"].lower() == "wal" and hello["pragmas"]["busy_timeout"] == 10000
        assert [worker["name"] for worker in run_data["workers"]] == ["go-1", "go-2"]
        assert run_data["jobs_completed"] == run_data["parents"] * run_data["children_per_parent"]
    report = (pytester.path / "report.md").read_text()
    assert hello["runtime"] in report  # the template's "Go Version" field


def test_every_fix_off_fails_busy_errors_from_the_go_workers_events(pytester: pytest.Pytester, go_worker: str) -> None:
    result = pytester.runpytest(*BASE, "--quaero-scenario=light", f"--quaero-worker-command={go_worker}",
                                "--quaero-disable=all", "--quaero-workers=4", "--quaero-job-time=0",
                                "--quaero-visibility-timeout=1s", "--quaero-json=results.json")
    result.stdout.fnmatch_lines(["*SQLITE_BUSY Errors*FAIL*"])
    retry = json.loads((pytester.path / "results.json").read_text())["results"][0]["retry"]
    in_go = {op: data["busy_events"] for op, data in retry.items()
             if op in ("connect", "queue_receive", "save_job", "progress_update", "queue_delete")}
    assert sum(in_go.values()) > 0, retry


def test_compare_fixes_gives_the_before_and_after_table_for_go(pytester: pytest.Pytester, go_worker: str) -> None:
    result = pytester.runpytest(*BASE, "--quaero-scenario=light", f"--quaero-worker-command={go_worker}",
                                "--quaero-compare-fixes", "--quaero-job-time=0", "--quaero-visibility-timeout=1s",
                                # zero job time drains light in well under the template's 500ms stagger
                                "--quaero-stagger=50ms", "--quaero-threshold=stagger_tolerance=2s",
                                "--quaero-report=report.md", "--quaero-json=results.json")
    result.assert_outcomes(passed=10)
    comparison = json.loads((pytester.path / "results.json").read_text())["results"][0]["extra"]["fix_comparison"]
    assert comparison["busy_errors_before"] > comparison["busy_errors_after"] == 0
    assert {entry["fix"] for entry in comparison["ablation"]} == {"wal", "busy_timeout", "retries", "stagger",
                                                                   "immediate"}
    assert "Before Fixes" in (pytester.path / "report.md").read_text()
