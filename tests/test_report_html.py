"""pytest-html: extra columns, per-scenario criteria tables and charts, environment; parsed from real reports."""

from __future__ import annotations

import base64
import re
import sqlite3
from html import unescape

import pytest

from pytest_quaero.report.html import CHARTS_HINT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# the shared report runs (fixtures report_runs, report_store)
pytest_plugins = ["reportkit"]


def _criterion_rows(data: dict) -> dict[str, list[str]]:
    return {test_id: entries[0]["resultsTableRow"] for test_id, entries in data["tests"].items()
            if test_id.startswith("quaero[")}


def _cell(row: list[str], key: str) -> str:
    for cell in row:
        match = re.fullmatch(rf'<td class="col-{key}">(.*)</td>', cell)
        if match:
            return match.group(1)
    raise AssertionError(f"no col-{key} cell in {row}")


@pytest.mark.parametrize("run", ["pass", "fail", pytest.param("xdist", marks=pytest.mark.slow)])
def test_criterion_rows_carry_scenario_measured_required(report_runs, run: str) -> None:
    outcome = report_runs.get(run)
    data, verdicts = outcome.html_data(), outcome.json()["results"][0]["verdicts"]
    rows = _criterion_rows(data)
    assert len(rows) == len(verdicts) == 10
    html_text = outcome.text("html")
    header = re.findall(r'<th class="sortable" data-column-type="(\w+)">', html_text)
    assert header[:5] == ["result", "testId", "quaero_scenario", "quaero_measured", "quaero_required"]
    for verdict in verdicts:
        row = rows[f"quaero[light]::{verdict['criterion']}"]
        # cells pair with header cells by index: ours sit right after the Test column
        assert row[2].startswith('<td class="col-quaero_scenario">')
        assert _cell(row, "quaero_scenario") == "light"
        assert unescape(_cell(row, "quaero_measured")) == verdict["measured"]
        assert unescape(_cell(row, "quaero_required")) == verdict["required"]
        assert _cell(row, "result") == ("Passed" if verdict["passed"] else "Failed")


@pytest.mark.parametrize("run", ["pass", pytest.param("xdist", marks=pytest.mark.slow)])
def test_charts_are_full_width_inline_pngs_in_the_summary(report_runs, run: str) -> None:
    pytest.importorskip("matplotlib", exc_type=ModuleNotFoundError)
    outcome = report_runs.get(run)
    text = outcome.text("html")
    summary = text[text.index('class="quaero-summary"'):text.index('id="results-table"')]
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)" style="width: 100%; '
                        r'max-width: 960px', summary)
    assert sorted(name for name, _ in images) == [
        "quaero[light] processing time distribution", "quaero[light] queue length over time",
        "quaero[light] utilization per worker",
    ]
    for _, content in images:
        png = base64.b64decode(content)
        assert png.startswith(PNG_MAGIC)
        assert int.from_bytes(png[16:20], "big") >= 900  # drawn 960 px wide: readable without a click
    extras = [e for entries in outcome.html_data()["tests"].values() for e in entries[0]["extras"]]
    assert not [e for e in extras if e["format_type"] == "image"]  # no carousel thumbnails
    tables = [e["content"] for e in extras if e["format_type"] == "html"]
    assert any("quaero-criteria" in t and "Throughput" in t for t in tables)
    assert any('href="#quaero-run-' in t or "in the summary at the top" in t for t in tables)
    assert CHARTS_HINT not in text


def test_without_matplotlib_the_report_says_how_to_get_charts(report_runs) -> None:
    outcome = report_runs.get("fail")  # run with matplotlib blocked
    data = outcome.html_data()
    extras = [e for entries in data["tests"].values() for e in entries[0]["extras"]]
    assert not [e for e in extras if e["format_type"] == "image"]
    assert any(CHARTS_HINT.replace("'", "&#x27;") in e["content"] for e in extras if e["format_type"] == "html")
    assert "pip install &#x27;pytest-quaero[charts]&#x27;" in outcome.text("html")


def test_summary_holds_each_scenarios_criteria_table(report_runs) -> None:
    outcome = report_runs.get("fail")
    text = outcome.text("html")
    summary = text[text.index('class="quaero-summary"'):]
    assert "quaero load test: FAIL" in summary
    assert re.search(r"<td [^>]*>Throughput</td><td [^>]*>[\d.]+ jobs/sec</td><td [^>]*>&gt;= 100000 jobs/sec</td>"
                     r"<td class=\"failed\" style=\"[^\"]*color: #c00[^\"]*\">FAIL</td>", summary)
    # the scenario's name links to the row of its first failing criterion, which holds its tables
    assert '<a href="#quaero[light]::throughput">quaero[light]</a>' in summary
    rows = outcome.html_data()["tests"]
    failing = [e["content"] for e in rows["quaero[light]::throughput"][0]["extras"] if e["format_type"] == "html"]
    assert any("quaero-criteria" in t for t in failing)
    assert not rows["quaero[light]::execution_time"][0]["extras"]


def test_duration_of_criterion_rows_points_at_the_load_run(report_runs) -> None:
    rows = report_runs.get("pass").html_data()["tests"]
    carrier = _cell(rows["quaero[light]::execution_time"][0]["resultsTableRow"], "duration")
    assert carrier.endswith("(the load run, in this item's setup)")
    other = _cell(rows["quaero[light]::throughput"][0]["resultsTableRow"], "duration")
    assert other.endswith('(judged from the load run timed on <a href="#quaero[light]::execution_time">'
                          'quaero[light]::execution_time</a>)')


def test_environment_lists_sqlite_python_and_settings(report_runs) -> None:
    environment = report_runs.get("pass").html_data()["environment"]
    assert environment["SQLite"] == sqlite3.sqlite_version
    assert environment["Python"]
    settings = environment["quaero settings"]
    assert settings["stagger"] == "100ms (command line)"
    assert settings["busy_timeout_ms"] == "10000ms (default)"
    assert set(settings) >= {"workers", "retry_attempts", "wal", "job_time", "poll_interval"}


def test_html_hooks_register_only_with_pytest_html(pytester: pytest.Pytester) -> None:
    # without pytest-html its hookspecs do not exist: an unconditional registration would be
    # an "unknown hook" error once collection finishes
    pytester.makepyfile("def test_ok(): pass")
    result = pytester.runpytest("-p", "no:html", "--quaero-report=report.md")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1)
