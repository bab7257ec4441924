"""--quaero-report: the team's template, filled in from a real run, parsed back."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from reportkit import (
    FAST,
    TEMPLATE,
    headings,
    placeholders,
    section,
    table_rows,
)

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.results_json import results_from
from pytest_quaero.core.settings import Settings
from pytest_quaero.report.markdown import LINEAR_MIN_FACTOR, ReportContext, render, step_summary

TEMPLATE_ROWS = ["Total Jobs Created", "Execution Time", "SQLITE_BUSY Errors", "Queue Deletion Success Rate",
                 "Hierarchy Integrity", "Job Completion Rate", "Worker Staggering", "Throughput"]

# the shared report runs (fixtures report_runs, report_store)
pytest_plugins = ["reportkit"]


def template_labels(text: str) -> list[str]:
    """Bold ``**Label:**`` lead-ins of the template, Go Version included (it names the workers' runtime)."""
    return re.findall(r"^\*\*([^*]+):\*\*", text, re.M) + re.findall(r"^- \*\*([^*]+):\*\*", text, re.M)


def test_the_placeholder_regex_finds_the_templates_placeholders() -> None:
    # the check below is only worth something if it fires on the unfilled template
    found = placeholders(TEMPLATE.read_text(encoding="utf-8"))
    assert "[DATE TO BE FILLED]" in found and "[PASS/FAIL]" in found and "[RATE]" in found
    assert len(found) > 50


@pytest.mark.parametrize("run", ["pass", "fail"])
def test_every_placeholder_is_filled(report_runs, run: str) -> None:
    text = report_runs.get(run).text("md")
    assert placeholders(text) == []
    assert "[NUMBER]" not in text and "TO BE FILLED" not in text


@pytest.mark.parametrize("run", ["pass", "fail"])
def test_template_headings_and_labels_appear_in_order(report_runs, run: str) -> None:
    text = report_runs.get(run).text("md")
    template = TEMPLATE.read_text(encoding="utf-8")
    ours = headings(text)
    position = -1
    for heading in headings(template):
        assert heading in ours, heading
        index = ours.index(heading, position + 1)
        assert index > position, f"{heading} out of order"
        position = index
    for label in template_labels(template):
        assert f"**{label}:**" in text, label
    assert text.startswith("# Job Load Test Results\n")


def test_scenario_table_has_the_template_rows_and_real_statuses(report_runs) -> None:
    run = report_runs.get("pass")
    text, document = run.text("md"), run.json()
    rows = table_rows(section(text, "### Light Load Test (100 Jobs)"))
    assert [r[0] for r in rows][:len(TEMPLATE_ROWS)] == TEMPLATE_ROWS
    verdicts = {v["title"]: v for v in document["results"][0]["verdicts"]}
    for metric, measured, required, status in rows[1:]:
        verdict = verdicts[metric]
        assert measured.startswith(verdict["measured"]) and required == verdict["required"]
        assert status == ("✅ PASS" if verdict["passed"] else "❌ FAIL")
    for heading in ("### Medium Load Test (500 Jobs)", "### Heavy Load Test (1500 Jobs)"):
        body = section(text, heading)
        assert "not measured:" in body and "--quaero-scenario=" in body and "|" not in body


def test_figures_agree_with_the_json(report_runs) -> None:
    run = report_runs.get("pass")
    text, result = run.text("md"), run.json()["results"][0]
    # throughput = jobs / time
    throughput = result["jobs_completed"] / result["execution_time"]
    assert abs(result["derived"]["throughput"] - throughput) < 1e-6
    perf = section(text, "#### Performance Metrics")
    assert re.search(rf"Light Load \(100 jobs\):\n.*\n  - Jobs/Second: {throughput:.1f}\n", perf), perf
    # deleted = enqueued, on a pass
    assert result["passed"] and result["derived"]["messages_deleted"] == result["messages_enqueued"] == 100
    assert f"- **Total Messages Enqueued:** {result['messages_enqueued']}\n" in text
    assert f"- **Total Messages Deleted:** {result['derived']['messages_deleted']}\n" in text
    # parents x children = children counted
    assert result["parents"] * result["children_per_parent"] == result["children_found"]
    assert f"- **Total Child Jobs Created:** {result['children_found']} (of 100 planned)" in text
    assert f"- **Total Parent Jobs Created:** {result['integrity']['parents_found']} (of 5 planned)" in text
    # the timeline is the run's own, offsets and all
    timeline = section(text, "#### Light Load Test (100 jobs)")
    for entry in result["timeline"]:
        minutes, seconds = divmod(entry["offset"], 60)
        assert f"t+{int(minutes):02d}:{seconds:06.3f} {entry['label']}" in timeline
    # SQL results are the integrity checks' rows
    hierarchy = section(text, "#### Job Hierarchy Validation Query")
    query = next(q for q in result["integrity"]["queries"] if q["title"] == "Job Hierarchy Validation Query")
    for parent_id, name, count in query["rows"]:
        assert f"{parent_id} | {name} | {count}" in hierarchy


def test_passing_run_summary_is_written_from_the_numbers(report_runs) -> None:
    run = report_runs.get("pass")
    assert run.ret == 0, run.stdout
    text, result = run.text("md"), run.json()["results"][0]
    assert "**Overall Status:** PASS (10 of 10 criteria passed" in text
    # only light ran: no approval, and the missing scenarios are named with the option
    assert "APPROVED FOR PRODUCTION" not in text
    assert "NOT YET APPROVED" in text and "medium and heavy were not measured" in text
    assert "Linear scaling achieved: not measured: needs at least two scenarios" in text
    assert "scales linearly" not in text
    busy = result["derived"]["busy_errors"]
    if busy == 0:
        assert "All retry operations successful" not in text
        assert "#### Successful Retry Operation\nNone happened" in text
    stagger = section(text, "#### Worker Staggering Verification")
    assert "Worker 1 started successfully" in stagger and "Worker 2 started successfully" in stagger
    for line in result["log_excerpts"]["stagger"]:
        assert line in stagger
    assert f"**Database Version:** SQLite {result['sqlite_version']}" in text
    assert f"**Go Version:** not applicable: the workers ran on Python {result['python_version']}\\\n" in text
    assert text.rstrip().endswith("**Status:** PASS")


def test_failing_run_is_not_approved_and_lists_the_failed_criterion(report_runs) -> None:
    run = report_runs.get("fail")
    assert run.ret == 1
    text, result = run.text("md"), run.json()["results"][0]
    throughput = next(v for v in result["verdicts"] if v["criterion"] == "throughput")
    assert not throughput["passed"]
    passed = sum(v["passed"] for v in result["verdicts"])  # 9 of 10, unless the machine was very slow
    assert f"**Overall Status:** FAIL ({passed} of 10 criteria passed" in text
    recommendation = next(line for line in text.splitlines() if line.startswith("**Recommendation:**"))
    assert recommendation.startswith("**Recommendation:** NOT APPROVED for production. Failing criteria: ")
    assert f"light Throughput (measured {throughput['measured']}, required >= 100000 jobs/sec)" in recommendation
    assert "APPROVED FOR PRODUCTION" not in text and "**Status:** ❌ **NOT APPROVED**" in text
    critical = section(text, "### Critical Issues")
    assert f"- **light — Throughput:** measured {throughput['measured']}, required >= 100000 jobs/sec" in critical
    rows = {r[0]: r for r in table_rows(section(text, "### Light Load Test (100 Jobs)"))}
    assert rows["Throughput"][3] == "❌ FAIL" and rows["Execution Time"][3] == "✅ PASS"
    assert "they did NOT pass every criterion" in text
    assert text.rstrip().endswith("**Status:** FAIL")


def test_recommended_settings_load_back_with_quaero_config(report_runs, pytester: pytest.Pytester) -> None:
    text = report_runs.get("pass").text("md")
    toml = re.search(r"```toml\n(.*?)```", section(text, "#### Recommended Production Settings"), re.S)
    assert toml
    config = pytester.path / "recommended.toml"
    config.write_text(toml.group(1), encoding="utf-8")
    assert 'stagger = "100ms"' in toml.group(1) and 'job_time = "1ms"' in toml.group(1)
    result = pytester.runpytest(f"--quaero-config={config}", "--quaero-scenario=light", "--co")
    assert result.ret == 0, result.stdout.str()
    # the values came from the file: the header shows them with no command-line option given
    result.stdout.fnmatch_lines(["quaero: scenarios light; 2 workers (thread), stagger 100ms, *"])


def test_report_without_any_scenario_says_not_measured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--quaero-report=report.md")
    assert result.ret == 0
    text = (pytester.path / "report.md").read_text(encoding="utf-8")
    assert placeholders(text) == []
    assert "**Overall Status:** not measured: no scenario ran" in text
    assert "PASS" not in text.split("## Test Configuration")[0]
    result.stdout.fnmatch_lines(["quaero: Markdown report written to *report.md", "quaero: no scenario ran*"])


def test_quaero_run_results_are_reported_with_their_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_my_queue(quaero_run):
            assert quaero_run("light").passed
        """
    )
    result = pytester.runpytest(*FAST, "--quaero-report=report.md", "--junitxml=junit.xml")
    assert result.ret == 0, result.stdout.str()
    text = (pytester.path / "report.md").read_text(encoding="utf-8")
    assert re.search(r"Run \w+ \(from test_quaero_run_results_are_reported_with_their_test.py::test_my_queue\):",
                     section(text, "### Light Load Test (100 Jobs)"))
    junit = (pytester.path / "junit.xml").read_text(encoding="utf-8")
    assert re.search(r'name="quaero[._]light[._]throughput"', junit)


def test_report_path_that_is_a_directory_is_a_usage_error(pytester: pytest.Pytester) -> None:
    (pytester.path / "reports").mkdir()
    result = pytester.runpytest("--quaero-report=reports")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quaero-report=reports: is a directory*"])


# ---------------------------------------------------------------- rendering rules, on real results


def _real(report_runs) -> RunResult:
    return results_from(report_runs.get("pass").json())[0]


def _resized(result: RunResult, name: str, parents: int, children: int, throughput: float) -> RunResult:
    """A copy of a real run relabelled as another scenario with a chosen throughput.

    Its integrity queries (light's rows, which would contradict the new size) are left out.
    """
    jobs = parents * children
    return dataclasses.replace(result, scenario=name, parents=parents, children_per_parent=children,
                               integrity={**result.integrity, "queries": []},
                               jobs_completed=jobs, children_found=jobs, execution_time=jobs / throughput,
                               verdicts=[dict(v) for v in result.verdicts])


def session_of(result: RunResult) -> Settings:
    """The session settings ``result`` ran with (so it is compared, not set apart as a run of its own)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in result.settings.items()
              if k in Settings().as_dict() and k != "db_path"}
    return dataclasses.replace(Settings(), **values)


def _render(results: list[RunResult], settings: Settings | None = None) -> str:
    return render(ReportContext(results, settings or session_of(results[0]), machine={"cpu_count": 2},
                                versions={"plugin": "x"}))


def test_approval_needs_every_template_scenario_passing(report_runs) -> None:
    light = _real(report_runs)
    runs = [light, _resized(light, "medium", 10, 50, light.throughput),
            _resized(light, "heavy", 15, 100, light.throughput)]
    text = _render(runs)
    assert "**Status:** ✅ **APPROVED FOR PRODUCTION**" in text
    assert "Linear scaling achieved: YES" in text
    assert "(medium; SCALING FACTOR: 1.00 vs light)" in text
    assert placeholders(text) == []
    failing = dataclasses.replace(runs[2], verdicts=[dict(v, passed=False) if v["criterion"] == "throughput" else v
                                                     for v in runs[2].verdicts])
    text = _render([*runs[:2], failing])
    assert "APPROVED FOR PRODUCTION" not in text and "NOT APPROVED" in text and "heavy Throughput" in text


def test_scaling_rule_is_stated_and_applied(report_runs) -> None:
    light = _real(report_runs)
    slow = _resized(light, "medium", 10, 50, light.throughput * (LINEAR_MIN_FACTOR - 0.1))
    text = _render([light, slow])
    assert "Linear scaling achieved: NO (lowest scaling factor 0.70, medium, against 0.8)" in text
    assert f"Rule: linear when every larger load's throughput is at least {LINEAR_MIN_FACTOR:.0%} of light's" in text
    assert "System throughput does NOT scale linearly" in text
    assert "1500 jobs → not measured: heavy was not run" in text
    # the scaling verdict is part of the decision: no approval, and it is listed with the issues
    assert "APPROVED FOR PRODUCTION" not in text and "**Status:** ❌ **NOT APPROVED**" in text
    assert "Template claims not met: Linear performance scaling: NO" in text
    assert "- **Template claim not met — Linear performance scaling:** NO" in section(text, "### Critical Issues")
    assert "they did NOT pass every criterion and claim" in text and "they passed every criterion" not in text


def test_before_fixes_figures_are_used_when_the_comparison_ran(report_runs) -> None:
    light = _real(report_runs)
    assert "Before Fixes: not measured: needs the before-fixes run of --quaero-compare-fixes" in _render([light])
    # the shape pytest_quaero.core.fixes writes into result.extra["fix_comparison"]
    comparison = {"before": {"busy_errors": 40}, "ablation": [
        {"fix": "busy_timeout", "title": "busy_timeout", "busy_errors": 9, "retries": 9, "throughput": 200.0,
         "delta_busy_errors": 9},
        {"fix": "wal", "title": "WAL journal mode", "error": "RunError: boom"},
    ]}
    text = _render([dataclasses.replace(light, extra={**light.extra, "fix_comparison": comparison})])
    analysis = section(text, "#### SQLITE_BUSY Error Analysis")
    assert "Before Fixes: 40 errors detected (light: 40)" in analysis
    assert f"After Fixes:  {light.busy_errors} errors detected" in analysis
    if light.busy_errors == 0:
        assert "Improvement:  100.0% error elimination (40 -> 0)" in analysis
    assert "  - without busy_timeout: 9 busy errors (+9), 9 retries, 200.0 jobs/s" in analysis
    assert "  - without WAL journal mode: not measured: that run failed: RunError: boom" in analysis
    failed = {"before": {"error": "RunError: deadline"}}
    text = _render([dataclasses.replace(light, extra={**light.extra, "fix_comparison": failed})])
    assert "Before Fixes: not measured: the before-fixes run failed (light: RunError: deadline)" in text


@pytest.mark.slow
def test_compare_fixes_session_fills_before_and_after(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--quaero-scenario=light", *FAST, "--quaero-compare-fixes", "--quaero-report=r.md",
                                "--quaero-json=r.json")
    assert result.ret == 0, result.stdout.str()
    text = (pytester.path / "r.md").read_text(encoding="utf-8")
    comparison = json.loads((pytester.path / "r.json").read_text())["results"][0]["extra"]["fix_comparison"]
    assert f"Before Fixes: {comparison['before']['busy_errors']} errors detected" in text
    assert "Each fix alone turned off (light;" in text
    assert placeholders(text) == []


def test_a_retry_in_the_log_is_quoted(report_runs) -> None:
    light = _real(report_runs)
    lines = [
        "[2025-11-02T21:13:59.000Z] WARN  JobWorker-1 Database busy (SQLITE_BUSY) on save_job x, retrying in 100ms",
        "[2025-11-02T21:13:59.100Z] INFO  JobWorker-1 Retry attempt 2/5 for save_job x",
        "[2025-11-02T21:13:59.101Z] INFO  JobWorker-1 Successfully completed save_job x after retry",
    ]
    retried = dataclasses.replace(light, log_excerpts={**light.log_excerpts, "retry": lines,
                                                       "retry_outcome": "succeeded"})
    body = section(_render([retried]), "#### Successful Retry Operation")
    assert "None happened" not in body and all(line in body for line in lines)


def test_step_summary_tables(report_runs) -> None:
    run = report_runs.get("pass")
    summary = run.files["summary"].read_text(encoding="utf-8")
    assert summary == step_summary(results_from(run.json()))
    assert summary.startswith("## pytest-quaero load test: PASS")
    rows = table_rows(summary)
    assert [r[0] for r in rows][:len(TEMPLATE_ROWS)] == TEMPLATE_ROWS
    assert "quaero: summary appended to $GITHUB_STEP_SUMMARY" in run.stdout


@pytest.mark.slow  # a whole pytest session of its own: CI runs it with -m slow
def test_xdist_run_reports_the_same_content(report_runs) -> None:
    single, distributed = report_runs.get("pass"), report_runs.get("xdist")
    assert distributed.ret == 0, distributed.stdout

    def skeleton(text: str) -> list[str]:
        # what must not depend on how the run was distributed: headings, row names, statuses
        rows = [f"{r[0]}: {r[-1]}" for r in table_rows(text)]
        return headings(text) + rows

    assert skeleton(distributed.text("md")) == skeleton(single.text("md"))
    assert placeholders(distributed.text("md")) == []
    assert [r["scenario"] for r in distributed.json()["results"]] == ["light"]
    assert distributed.json()["session"]["xdist_workers"] == 2


def test_log_excerpts_pick_a_successful_retry_from_interleaved_lines(tmp_path) -> None:
    from pytest_quaero.core.log import log_excerpts

    log = tmp_path / "quaero.log"
    log.write_text("\n".join([
        "[2025-11-02T21:13:58.000Z] INFO  WorkerPool Starting worker pool with 2 workers (thread mode, 500ms stagger)",
        "[2025-11-02T21:13:58.001Z] INFO  JobWorker-1 Worker 1 started successfully (1ms after pool start)",
        "[2025-11-02T21:13:59.000Z] WARN  JobWorker-2 Database busy (SQLITE_BUSY) on queue_delete a, retrying in 100ms",
        "[2025-11-02T21:13:59.001Z] WARN  JobWorker-1 Database busy (SQLITE_BUSY) on save_job b, retrying in 100ms",
        "[2025-11-02T21:13:59.100Z] INFO  JobWorker-2 Retry attempt 2/2 for queue_delete a",
        "[2025-11-02T21:13:59.101Z] INFO  JobWorker-1 Retry attempt 2/5 for save_job b",
        "[2025-11-02T21:13:59.102Z] ERROR JobWorker-2 Database busy (SQLITE_BUSY) on queue_delete a, "
        "giving up after 2 attempts",
        "[2025-11-02T21:13:59.103Z] INFO  JobWorker-1 Successfully completed save_job b after retry",
        "[2025-11-02T21:13:59.501Z] INFO  JobWorker-2 Worker 2 started successfully (501ms after pool start)",
    ]) + "\n")
    excerpts = log_excerpts(str(log))
    assert excerpts["retry_outcome"] == "succeeded"
    assert [line[27:] for line in excerpts["retry"]] == [
        "WARN  JobWorker-1 Database busy (SQLITE_BUSY) on save_job b, retrying in 100ms",
        "INFO  JobWorker-1 Retry attempt 2/5 for save_job b",
        "INFO  JobWorker-1 Successfully completed save_job b after retry",
    ]
    assert len(excerpts["stagger"]) == 3 and "Worker 2 started" in excerpts["stagger"][-1]
    assert log_excerpts(str(tmp_path / "missing.log")) == {"retry": [], "retry_outcome": "", "stagger": []}
