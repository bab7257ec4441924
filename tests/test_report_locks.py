"""Write lock and detection checks in the Markdown, HTML and terminal reports, parsed back from real runs."""

from __future__ import annotations

import dataclasses
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from gallery.cases import BASE, CASE_BY_KEY, TINY, run_case
from reportkit import placeholders, section

from pytest_quaero.core.criteria import Thresholds, evaluate
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.report.html import detection_html, lock_table_html
from pytest_quaero.report.locks import HOLD_WAIT_MEANING, LockTable
from pytest_quaero.report.markdown import ReportContext, render
from pytest_quaero.report.terminal import detection_line, lock_line, write_summary

# the shared report runs (fixtures report_runs, report_store)
pytest_plugins = ["reportkit"]

LOCKS = "#### Write Lock Hold and Wait"
DETECTION = "### Detection Checks"
CHECKS = ["Acks", "Stalled receives", "Sends before their job row", "Silent writes", "Lost jobs", "Unfinished children"]
#: the keys issue 13 adds to a result; an older result (a JSON file, a baseline) has none of them
NEW_EXTRA = ("locks", "acks", "stalls", "sends", "silent_writes")
NEW_INTEGRITY = ("unfinished_children", "unfinished_examples", "lost_jobs", "lost_examples")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """A real run of the correct queue: 3 x 10 jobs, 4 workers, 1ms jobs (the gallery's fast settings)."""
    result = run_scenario(TINY, BASE, run_dir=tmp_path_factory.mktemp("clean"), deadline=10.0, sample_interval=0.05)
    result.verdicts = [v.as_dict() for v in evaluate(result, Thresholds(max_execution_time=10.0))]
    return result


def _render(*results: RunResult) -> str:
    return render(ReportContext(list(results), Settings(), machine={"cpu_count": 2}, versions={"plugin": "x"}))


def _md_rows(body: str) -> list[list[str]]:
    """The body rows of the write-lock table(s) in ``body``."""
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    assert lines and lines[0].startswith("| Operation | Write Transactions | Hold p50/p95/max ms | "
                                         "Writer Wait p50/p95/max ms | Statements | Busy Errors Seen |"), body
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines if
            not line.startswith("| Operation")]


def _html_rows(fragment: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", fragment)
    return [[unescape(c) for c in re.findall(r"<t[dh] [^>]*>(.*?)</t[dh]>", row)] for row in rows]


def _spread(data: dict[str, Any]) -> str:
    return "-" if not data["samples"] else f"{data['p50']:.2f} / {data['p95']:.2f} / {data['max']:.2f}"


def _op_of(label: str, operations: dict[str, Any]) -> str:
    """The operation a row's label names: itself, or itself with an explanation in brackets."""
    return max((op for op in operations if label == op or label.startswith(op + " (")), key=len)


def _assert_rows_are(rows: list[list[str]], locks: dict[str, Any]) -> None:
    """Each row holds its operation's figures; the harness comes last among them, then the total."""
    operations = locks["operations"]
    assert len(rows) == len(operations) + 1
    by_op = {_op_of(row[0], operations): row for row in rows[:-1]}
    assert set(by_op) == set(operations)
    if "harness" in operations:
        assert rows[-2][0].startswith("harness (the plugin's own thread")
    assert rows[-1][0].startswith("all operations")
    for op, row in [*by_op.items(), ("total", rows[-1])]:
        data = locks["total"] if op == "total" else operations[op]
        _, transactions, hold, wait, statements, busy = row
        assert transactions == str(data["write_transactions"]), (op, row)
        assert hold == _spread(data["hold_ms"]) and wait == _spread(data["wait_ms"]), (op, row)
        assert statements.split(" ")[0] == str(sum(data["statements"].values())), (op, row)
        for kind, count in data["statements"].items():
            assert f"{kind} {count}" in statements
        assert busy.split(" ")[0] == str(data["busy_errors"]), (op, row)
    assert sum(int(row[1]) for row in rows[:-1]) == int(rows[-1][1])


# ---------------------------------------------------------------- Markdown, from a real run


def test_markdown_write_lock_table_holds_the_runs_measurements(clean: RunResult) -> None:
    locks = clean.extra["locks"]
    text = _render(clean)
    body = section(text, LOCKS)
    assert HOLD_WAIT_MEANING in body and "every connection the run opened" in body
    assert f"**Gallery Load (30 jobs):** {locks['connections']} connections observed" in body
    rows = _md_rows(body)
    _assert_rows_are(rows, locks)
    by_op = {_op_of(row[0], locks["operations"]): row for row in rows[:-1]}
    # what the sentence claims, measured: the job store's BEGIN IMMEDIATE transactions have a hold,
    # goqite's one-statement receive is all wait
    assert by_op["progress_update"][2] != "-" and by_op["create_child"][2] != "-"
    assert by_op["queue_receive"][1] == "0" and by_op["queue_receive"][2] == "-" != by_op["queue_receive"][3]
    # the table sits under Database Lock Resilience, before the message lifecycle, and fills no placeholder
    assert text.index("#### Average Retry Attempts per Operation") < text.index(LOCKS) \
        < text.index("### Queue Message Lifecycle")
    assert placeholders(text) == []
    # medium and heavy did not run: each says so, with the option
    assert "**Medium Load (500 jobs):** not measured: medium was not run" in body


def test_clean_run_detection_checks_say_none(clean: RunResult) -> None:
    text = _render(clean)
    body = section(text, DETECTION)
    lines = {m.group(1): m.group(0) for m in re.finditer(r"^- \S+ \*\*([^*]+):\*\* .*$", body, re.M)}
    assert list(lines) == CHECKS, body
    acks = clean.extra["acks"]
    assert acks["checked"] > 0  # a check that looked at no ack proves nothing
    assert lines["Acks"] == (f"- ✅ **Acks:** {acks['checked']} checked (each must remove exactly the message it "
                             "was given): none wrong")
    for name in CHECKS[1:]:
        assert lines[name].startswith(f"- ✅ **{name}:** none"), lines[name]
    assert text.index("### Edge Cases Handled") < text.index(DETECTION) < text.index("## Remaining Issues")
    assert detection_line(clean) == ""
    issues = section(text, "## Remaining Issues (if any)")
    assert not any(f"{name}:" in issues for name in CHECKS)


def _with_findings(result: RunResult) -> RunResult:
    """``result`` with every detection check finding something, in the shapes the run records."""
    extra = {
        **result.extra,
        "acks": {"checked": 30, "unchecked": 1, "wrong_id": 2, "removed_nothing": 1, "stale": 0,
                 "examples": ["ack of m-1 removed m-7", "ack of m-2 removed m-9", "ack of m-3 removed nothing",
                              "fourth example"]},
        "stalls": {"total": 3, "lock_held": 2, "lock_error_seen": 1, "lock_free": 0,
                   "examples": ["worker 2 at t+0.4s"]},
        "sends": {"checked": 30, "before_row": 1, "examples": ["message for child-0-3 sent before its row"]},
        "silent_writes": {"total": 4, "examples": ["mark_running child-1-1 changed 0 rows"]},
    }
    integrity = {**result.integrity, "lost_jobs": 2, "lost_examples": ["child-2-5", "child-2-6"],
                 "unfinished_children": 5, "unfinished_examples": ["child-2-5"]}
    return dataclasses.replace(result, extra=extra, integrity=integrity)


def test_findings_are_counted_with_examples_in_every_report(clean: RunResult) -> None:
    found = _with_findings(clean)
    text = _render(found)
    body = section(text, DETECTION)
    assert ("- ❌ **Acks:** 30 checked (each must remove exactly the message it was given), 1 could not be checked: "
            "2 acks removed another message; 1 ack removed nothing (e.g. ack of m-1 removed m-7; ack of m-2 removed "
            "m-9; ack of m-3 removed nothing)") in body
    assert "fourth example" not in body  # three examples are enough to start looking
    assert ("- ❌ **Stalled receives:** 3 receives returned nothing while a visible message stayed visible (2 while "
            "another connection held the write lock, 1 after a lock error) (e.g. worker 2 at t+0.4s)") in body
    assert "- ❌ **Sends before their job row:** 1 message sent before its job row existed (30 sends checked)" in body
    assert ("- ❌ **Silent writes:** 4 status updates changed no row (e.g. mark_running child-1-1 changed 0 "
            "rows)") in body
    assert ("- ❌ **Lost jobs:** 2 jobs lost (acked, but neither completed nor failed) (e.g. child-2-5; "
            "child-2-6)") in body
    assert "- ❌ **Unfinished children:** 5 child jobs unfinished (e.g. child-2-5)" in body
    # wrong results are high priority, a stall (a delay) medium
    high, medium = section(text, "### High Priority Issues"), section(text, "### Medium Priority Issues")
    for name in ("Acks", "Sends before their job row", "Silent writes", "Lost jobs", "Unfinished children"):
        assert f"- gallery: {name}: " in high and f"{name}:" not in medium
    assert "- gallery: Stalled receives: 3 stalled receives (e.g. worker 2 at t+0.4s)" in medium
    line = detection_line(found)
    assert line.startswith("  detection: 2 acks removed another message; 1 ack removed nothing (e.g. ack of m-1 "
                           "removed m-7); 3 stalled receives")
    assert "2 jobs lost (e.g. child-2-5)" in line and "4 status updates changed no row" in line
    fragment = detection_html(found, "gallery")
    assert fragment.count('<li class="failed">') == 6 and "ack of m-1 removed m-7" in fragment


def test_terminal_summary_adds_the_detection_line_only_when_something_was_found(clean: RunResult) -> None:
    class Terminal:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def write_sep(self, sep: str, title: str) -> None:
            self.lines.append(title)

        def write_line(self, line: str, **markup: bool) -> None:
            self.lines.append(line)

    quiet, loud = Terminal(), Terminal()
    write_summary(quiet, [clean])
    write_summary(loud, [_with_findings(clean)])
    assert lock_line(clean) in quiet.lines and lock_line(clean).startswith("  write lock: held p50 ")
    assert not [line for line in quiet.lines if "detection:" in line]
    assert [line for line in loud.lines if line.startswith("  detection: ")] == [detection_line(_with_findings(clean))]


def test_a_delete_that_drops_silently_shows_in_every_report(tmp_path: Path) -> None:
    result = run_case(CASE_BY_KEY["silent_delete"], broken=True, work_dir=tmp_path)
    acks = result.extra["acks"]
    assert acks["removed_nothing"] > 0, acks  # the gallery's broken delete: every ack removes nothing
    text = _render(result)
    example = acks["examples"][0]
    assert (f"- ❌ **Acks:** {acks['checked']} checked (each must remove exactly the message it was given): "
            f"{acks['removed_nothing']} acks removed nothing (e.g. {example}") in section(text, DETECTION)
    assert f"- gallery: Acks: {acks['removed_nothing']} acks removed nothing (e.g. {example})" \
        in section(text, "### High Priority Issues")
    assert detection_line(result) == f"  detection: {acks['removed_nothing']} acks removed nothing (e.g. {example})"
    assert '<li class="failed"><b>Acks:</b>' in detection_html(result, "gallery")


def test_a_job_deleted_before_processing_is_reported_lost(tmp_path: Path) -> None:
    # delete on receive, then a crash mid-job: the message is gone, the job never finishes
    result = run_case(CASE_BY_KEY["delete_before_processing"], broken=True, work_dir=tmp_path)
    lost, outside = result.integrity["lost_jobs"], result.extra["acks"]["deleted_outside_ack"]
    assert lost > 0 and outside > 0
    body = section(_render(result), DETECTION)
    assert f"{outside} messages deleted outside any ack" in body
    lost_line = next(line for line in body.splitlines() if "**Lost jobs:**" in line)
    assert lost_line.startswith(f"- ❌ **Lost jobs:** {lost} jobs lost (acked, but neither completed nor failed) (e.g. "
                                f"{result.integrity['lost_examples'][0]}")
    assert f"- ❌ **Unfinished children:** {result.integrity['unfinished_children']} child jobs unfinished" in body
    line = detection_line(result)
    assert f"{outside} messages deleted outside any ack" in line and f"; {lost} jobs lost (e.g. " in line


def test_a_stale_ack_alone_is_not_a_finding(clean: RunResult) -> None:
    # the second ack of a redelivered message finds it gone: said, but not counted as wrong
    acks = {"checked": 12, "unchecked": 0, "wrong_id": 0, "removed_nothing": 0, "stale": 2, "deleted_outside_ack": 0,
            "examples": ["JobWorker-2: ack of m_1 found it already gone"]}
    stale = dataclasses.replace(clean, extra={**clean.extra, "acks": acks})
    assert ("- ✅ **Acks:** 12 checked (each must remove exactly the message it was given): none wrong; 2 acks found "
            "their message already gone (removed first by another ack or delete) (e.g. JobWorker-2: ack of m_1 found "
            "it already gone)") in section(_render(stale), DETECTION)
    assert detection_line(stale) == ""


# ---------------------------------------------------------------- results without the new figures


def _old(result: RunResult) -> RunResult:
    """``result`` as a JSON document written before issue 13 would load: none of the new keys."""
    data = result.to_dict()
    for key in NEW_EXTRA:
        data["extra"].pop(key, None)
    for key in NEW_INTEGRITY:
        data["integrity"].pop(key, None)
    return RunResult.from_dict(data)


def test_a_result_without_the_new_figures_says_not_measured(clean: RunResult) -> None:
    old = _old(clean)
    text = _render(old, clean)  # an old result next to a new one, as a baseline comparison would show them
    body = section(text, LOCKS)
    assert ("**Gallery (run " in body and "not measured: this result has no write-lock measurements (it was "
            "recorded before pytest-quaero measured it); re-run the scenario") in body
    assert len(_md_rows(body)) == len(clean.extra["locks"]["operations"]) + 1  # only the new run has a table
    detection = section(text, DETECTION)
    for name in CHECKS:
        assert re.search(rf"^- \*\*{name}:\*\* not measured: this result has no ", detection, re.M), name
    assert placeholders(text) == []
    assert lock_line(old) == "" and detection_line(old) == ""
    assert "not measured" in lock_table_html(old, "gallery") and "<table" not in lock_table_html(old, "gallery")
    assert "failed" not in detection_html(old, "gallery")


@pytest.mark.parametrize("locks", [{"operations": {"queue_receive": "garbage"}}, {"operations": []}, "garbage",
                                   {"operations": {"save_job": {"hold_ms": {"samples": 1}}}}])
def test_a_reshaped_entry_degrades_to_not_measured(clean: RunResult, locks: Any) -> None:
    odd = dataclasses.replace(clean, extra={**clean.extra, "locks": locks, "acks": {"checked": "many"},
                                            "stalls": None})
    body = section(_render(odd), LOCKS)
    assert "not measured: " in body and "| Operation" not in body
    assert "not measured" in lock_table_html(odd, "gallery")
    assert lock_line(odd).startswith("  write lock: not measured: ")


# ---------------------------------------------------------------- the files a real session writes


def test_report_files_carry_the_write_lock_table(report_runs) -> None:
    run = report_runs.get("pass")
    locks = run.json()["results"][0]["extra"]["locks"]
    md_rows = _md_rows(section(run.text("md"), LOCKS))
    _assert_rows_are(md_rows, locks)
    extras = [e["content"] for entries in run.html_data()["tests"].values() for e in entries[0]["extras"]
              if e["format_type"] == "html"]
    tables = [e for e in extras if "quaero-locks-table" in e]
    assert len(tables) == 1
    assert re.search(r'<table class="quaero-locks-table" style="border-collapse: collapse', tables[0])
    assert all("border: 1px solid" in cell for cell in re.findall(r"<t[dh] [^>]*>", tables[0]))
    header, *rows = _html_rows(tables[0])
    assert header == list(LockTable.HEADERS)
    assert rows == md_rows  # the same table in both reports
    assert any("quaero-detection" in e for e in extras)
    assert re.search(r"^  write lock: held p50 [\d.]+ms", run.stdout, re.M)
    assert "  detection: " not in run.stdout  # a clean run prints no detection line
