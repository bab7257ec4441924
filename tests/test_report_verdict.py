"""The Markdown report read as a team lead reads it: the verdict against every cross, scaling, queue figures.

Real runs where the behaviour needs one (a session with a test's own marker run, the
queue samples of a run); copies of a real run, resized or given other settings, where
the rule is about how several runs combine.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any

import pytest
from reportkit import FAST, section, table_rows

from pytest_quaero.core.metrics import RunResult, WorkerRecord
from pytest_quaero.core.results_json import results_from
from pytest_quaero.core.settings import Settings
from pytest_quaero.report.figures import queue_intervals
from pytest_quaero.report.markdown import ReportContext, render
from pytest_quaero.report.wording import duration, offset

# the shared report runs (fixtures report_runs, report_store)
pytest_plugins = ["reportkit"]

CROSS = "\N{CROSS MARK}"
OWN_RUNS = "### Tests' Own Runs (not part of the template's verdict)"


def _verdict_body(text: str) -> str:
    """The report without the tests' own runs (shown, but outside the verdict) and the status lines."""
    if OWN_RUNS in text:
        text = text.replace(section(text, OWN_RUNS), "")
    return "\n".join(line for line in text.splitlines() if not line.startswith("**Status:**"))


def assert_verdict_matches_every_cross(text: str) -> None:
    """An approval never stands beside a cross, and every crossed criterion row is a listed issue."""
    recommendation = next(line for line in text.splitlines() if line.startswith("**Recommendation:**"))
    crosses = [line for line in _verdict_body(text).splitlines() if CROSS in line]
    critical = section(text, "### Critical Issues")
    if not crosses:
        assert "NOT APPROVED for production" not in recommendation
        assert critical.strip().startswith("None identified"), critical
        return
    assert "APPROVED FOR PRODUCTION" not in text, crosses
    assert recommendation.startswith("**Recommendation:** NOT APPROVED for production."), recommendation
    assert "**Status:** ❌ **NOT APPROVED**" in text
    assert "None identified" not in critical
    for heading in re.findall(r"^### (\w+ Load Test \(\d+ Jobs\))$", text, re.M):
        label = heading.split()[0].lower()
        for row in table_rows(section(text, f"### {heading}")):
            if row[-1] == f"{CROSS} FAIL":
                assert f"- **{label} — {row[0]}:**" in critical, (row, critical)
    if not re.search(r"\| ❌ FAIL \|", _verdict_body(text)):
        assert "Template claim not met" in critical  # a cross outside the criteria tables is a claim not met


def _real(report_runs: Any, name: str = "pass") -> RunResult:
    return results_from(report_runs.get(name).json())[0]


def _settings_of(result: RunResult) -> Settings:
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in result.settings.items()
              if k in Settings().as_dict() and k != "db_path"}
    return dataclasses.replace(Settings(), **values)


def _sized(result: RunResult, name: str, parents: int, children: int, throughput: float, **changes: Any) -> RunResult:
    """A copy of a real run relabelled as another size (its integrity queries, light's rows, left out)."""
    jobs = parents * children
    changes.setdefault("integrity", {**result.integrity, "queries": []})
    return dataclasses.replace(result, scenario=name, parents=parents, children_per_parent=children,
                               jobs_completed=jobs, children_found=jobs, execution_time=jobs / throughput,
                               verdicts=[dict(v) for v in result.verdicts], **changes)


def _render(results: list[RunResult], settings: Settings, **context: Any) -> str:
    return render(ReportContext(results, settings, machine={"cpu_count": 2}, versions={"plugin": "x"}, **context))


@pytest.mark.parametrize("run", ["pass", "fail"])
def test_real_reports_verdict_matches_every_cross(report_runs: Any, run: str) -> None:
    assert_verdict_matches_every_cross(report_runs.get(run).text("md"))


def test_scaling_no_is_a_cross_and_blocks_approval(report_runs: Any) -> None:
    light = _real(report_runs)
    settings = _settings_of(light)
    passing = [light, _sized(light, "medium", 10, 50, light.throughput),
               _sized(light, "heavy", 15, 100, light.throughput)]
    text = _render(passing, settings)
    assert "**Status:** ✅ **APPROVED FOR PRODUCTION**" in text
    assert_verdict_matches_every_cross(text)
    slow = [*passing[:2], _sized(light, "heavy", 15, 100, light.throughput * 0.5)]
    text = _render(slow, settings)
    assert "❌ Linear performance scaling up to 1500 concurrent jobs: NO" in text
    assert_verdict_matches_every_cross(text)
    assert "**Overall Status:** FAIL (30 of 30 criteria passed in 3 scenario runs; 1 template claim not met)" in text
    assert text.rstrip().endswith("**Status:** FAIL")


def test_scaling_base_is_light_rows_go_by_size_and_other_settings_are_not_compared(report_runs: Any) -> None:
    light = _real(report_runs)
    settings = _settings_of(light)
    heavy = _sized(light, "heavy", 15, 100, light.throughput * 2)
    medium = _sized(light, "medium", 10, 50, light.throughput * 1.5)
    # a test's own run: smaller than light, other settings; a scenario shaped its own way (stress)
    own = _sized(light, "custom", 3, 10, light.throughput * 0.1, settings={**light.settings, "workers": 4},
                 extra={**light.extra, "origin": "test_mine.py::test_small"})
    stress = _sized(light, "stress", 10, 100, light.throughput * 9, settings={**light.settings, "workers": 8})
    text = _render([heavy, own, medium, stress, light], settings)
    scaling = section(text, "#### Scalability Analysis")
    rows = re.findall(r"^  (\d+) jobs +→ [\d.]+ jobs/sec \((\w+)(.*)\)$", scaling, re.M)
    assert [(jobs, label) for jobs, label, _ in rows] == [("100", "light"), ("500", "medium"), ("1500", "heavy"),
                                                          ("1000", "stress")]
    assert rows[0][2] == ", the base of the scaling factors"
    assert rows[1][2] == "; SCALING FACTOR: 1.50 vs light" and rows[2][2] == "; SCALING FACTOR: 2.00 vs light"
    assert rows[3][2].startswith("; not compared: ran with its own settings: workers 8 (session 2)")
    assert "30 jobs" not in scaling and "custom" not in scaling
    # the test's own run stays out of the verdict, the totals and the scenario tables
    assert "**Overall Status:** PASS (40 of 40 criteria passed in 4 scenario runs); 1 run with a test's own" in text
    own_runs = section(text, OWN_RUNS)
    assert "test_mine.py::test_small ran it with its own tree of 3 x 10 jobs; workers 4 (session 2)" in own_runs
    assert "### Custom Load Test" not in text


def test_a_failing_marker_run_stays_out_of_the_verdict(pytester: pytest.Pytester) -> None:
    # stagger 2s: the 10-job run ends before its second worker starts, so its stagger criterion fails
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quaero_scenario(parents=2, children=5, stagger="2s")
        def test_small_queue(quaero_run):
            quaero_run()
        """
    )
    result = pytester.runpytest("--quaero-scenario=light", *FAST, "--quaero-report=report.md")
    assert result.ret == 0, result.stdout.str()
    text = (pytester.path / "report.md").read_text(encoding="utf-8")
    own = section(text, OWN_RUNS)
    assert re.search(r"Run \w+, custom: 2 x 5 = 10 jobs, FAIL \(test_a_failing_marker_run_stays_out_of_the_verdict"
                     r"\.py::test_small_queue ran it with its own tree of 2 x 5 jobs; stagger 2s \(session 100ms\)\)",
                     own), own
    assert "| **Worker Staggering** |" in own and "❌ FAIL" in own
    assert "**Overall Status:** PASS (10 of 10 criteria passed in 1 scenario run); 1 run with a test's own" in text
    recommendation = next(line for line in text.splitlines() if line.startswith("**Recommendation:**"))
    assert recommendation.startswith("**Recommendation:** NOT YET APPROVED: every criterion passed in light,")
    assert "10 jobs" not in section(text, "#### Scalability Analysis")
    assert_verdict_matches_every_cross(text)


def test_queue_table_states_the_real_cadence_and_the_nearest_samples(report_runs: Any) -> None:
    run = report_runs.get("sampled")
    text, samples = run.text("md"), run.json()["results"][0]["queue_samples"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(samples)]
    cadence = sorted(gaps[:-1] or gaps)[len(gaps[:-1] or gaps) // 2]  # the last gap ends at the drain
    queue = section(text, "#### Queue Statistics During Test")
    stated = re.search(r"sampled every (\S+), (\d+) samples?;", queue)
    assert stated, queue
    assert stated.group(1) == duration(cadence) and int(stated.group(2)) == len(samples)
    rows = re.findall(r"^  (t\+\S+): (\d+) messages \(\d+ visible, \d+ in flight; sampled at (t\+\S+)\)$", queue, re.M)
    assert rows, queue
    _, step = queue_intervals(samples)
    for k, (mark, count, at) in enumerate(rows):
        assert mark == offset(k * step)
        nearest = min(samples, key=lambda s: (abs(s[0] - k * step), s[0]))
        assert (int(count), at) == (nearest[1], offset(nearest[0]))
    assert f"Peak Queue Length: {max(s[1] for s in samples)} messages" in queue


def test_a_run_shorter_than_the_sampling_interval_has_no_peak(report_runs: Any) -> None:
    light = _real(report_runs)
    short = dataclasses.replace(light, queue_samples=[[0.01, 0, 0, 0], [0.09, 0, 0, 0]], execution_time=0.09)
    text = _render([short], _settings_of(light))
    queue = section(text, "#### Queue Statistics During Test")
    assert "not measured: the run (90.0ms) was shorter than the sampling interval" in queue
    assert f"saw none of the {light.messages_enqueued} messages" in queue
    assert "Peak Queue Length: 0" not in text
    assert "  - Peak Queue Length: not measured: the run was shorter than the sampling interval" in text


def test_summary_lines_break_units_agree_and_git_errors_are_worded(report_runs: Any) -> None:
    light = _real(report_runs)
    text = _render([light], _settings_of(light), commit={
        "available": False, "error": "fatal: not a git repository (or any of the parent directories): .git"})
    block = section(text, "## Executive Summary").strip().split("\n\n---")[0].splitlines()
    assert [line.endswith("\\") for line in block] == [True] * (len(block) - 1) + [False]  # hard breaks on GitHub
    assert "commit not measured: the project is not in a git checkout" in text and "fatal:" not in text
    footer = text[text.index("**Test Conducted By:**"):].splitlines()
    assert all(line.endswith("\\") for line in footer[:-1])


def test_go_version_names_the_runtime_that_ran_the_workers(report_runs: Any) -> None:
    light = _real(report_runs)
    settings = _settings_of(light)
    assert f"**Go Version:** not applicable: the workers ran on Python {light.python_version}\\" in _render(
        [light], settings)
    hello = {"language": "go", "runtime": "go1.26.8", "libraries": {}, "sqlite_version": "3.46.0", "pragmas": {}}
    pool = {"kind": "external", "command": "./worker", "hello": hello, "workers": {"external": 2, "builtin": 0}}
    text = _render([dataclasses.replace(light, extra={**light.extra, "pool": pool})], settings)
    assert "**Go Version:** go1.26.8 (the external workers' runtime, from their hello)\\" in text
    rust = {**pool, "hello": {**hello, "language": "rust", "runtime": "1.80"}}
    text = _render([dataclasses.replace(light, extra={**light.extra, "pool": rust})], settings)
    assert "**Go Version:** not applicable: the workers ran on rust 1.80\\" in text


def test_idle_workers_leave_the_utilization_average_and_runs_are_not_called_concurrent(report_runs: Any) -> None:
    light = _real(report_runs)
    idle = WorkerRecord(index=2, name="JobWorker-3", started_wall=light.started_wall + 1, start_offset=0.9,
                        stop_offset=1.0, busy_seconds=0.0, jobs=0)
    text = _render([dataclasses.replace(light, workers=[*light.workers, idle])], _settings_of(light))
    startup = section(text, "#### Worker Startup and Staggering")
    busy = [w.utilization for w in light.workers if w.jobs]
    assert (f"  - Average: {sum(busy) / len(busy):.1f}% (of {len(busy)} workers that processed jobs; Worker 3 left "
            "out: started after the queue was empty and processed no job)") in startup
    medium = _sized(light, "medium", 10, 50, light.throughput, started_wall=light.started_wall + 3600)
    text = _render([light, medium], _settings_of(light))
    assert "2 runs, one run at a time: at most 2 workers and 10 producers at once" in text
    assert "concurrent producers" not in text
