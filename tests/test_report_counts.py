"""Database work per job in the Markdown, HTML and terminal reports, parsed back and held against the run's counts."""

from __future__ import annotations

import dataclasses
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from gallery.cases import BASE, TINY
from reportkit import placeholders, section

from pytest_quaero.core.counts import KINDS
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.report.counts import COUNTS_MEANING, CountTable, count_table, per_job
from pytest_quaero.report.html import counts_table_html
from pytest_quaero.report.locks import OPERATION_ORDER, lock_table
from pytest_quaero.report.markdown import ReportContext, render
from pytest_quaero.report.terminal import counts_line, lock_line, write_summary

# the shared report runs (fixtures report_runs, report_store)
pytest_plugins = ["reportkit"]

WORK = "#### Database Work per Job"
LOCKS = "#### Write Lock Hold and Wait"
NOT_GATED = re.compile(r"not gated: (\d+) retried statements?, (\d+) empty-poll statements?, (\d+) harness statements?")
#: the shape core.counts records, with every kind of row: an operation outside the known order, one kind only
SAMPLE: dict[str, Any] = {
    "jobs": 100,
    "total": {"select": 100, "insert": 200, "update": 300, "delete": 100, "begin": 200, "commit": 200, "rollback": 0,
              "other": 100, "statements": 1200, "write_transactions": 400, "rollbacks": 0, "rows_changed": 700,
              "connections": 7},
    "per_job": {"select": 1.0, "insert": 2.0, "update": 3.0, "delete": 1.0, "begin": 2.0, "commit": 2.0,
                "rollback": 0.0, "other": 1.0, "statements": 12.0, "write_transactions": 4.0, "rollbacks": 0.0,
                "rows_changed": 7.0, "connections": 0.07},
    "operations": {
        "zz_custom": {"select": 100, "statements": 100, "write_transactions": 0, "rows_changed": 0, "connections": 0},
        "create_child": {"insert": 200, "begin": 100, "commit": 100, "statements": 400, "write_transactions": 100,
                         "rows_changed": 200, "connections": 0},
        "queue_delete": {"delete": 100, "statements": 100, "write_transactions": 100, "rows_changed": 100,
                         "connections": 0},
        "connect": {"other": 1, "statements": 1, "write_transactions": 0, "rows_changed": 0, "connections": 7},
    },
    "not_gated": {"retried_statements": 1, "poll_statements": 57, "harness_statements": 48},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """A real run of the correct queue: 3 x 10 jobs, 4 workers, 1ms jobs (the gallery's fast settings)."""
    return _run(tmp_path_factory.mktemp("tiny"))


def _run(run_dir: Path) -> RunResult:
    result = run_scenario(TINY, BASE, run_dir=run_dir, deadline=10.0, sample_interval=0.05)
    counts = result.extra["counts"]
    # a table of zeros would match a dict of zeros: the run must have done the work it is checked against
    assert counts["jobs"] == TINY.total_jobs and counts["total"]["statements"] > counts["jobs"], counts
    return result


def _render(*results: RunResult) -> str:
    return render(ReportContext(list(results), Settings(), machine={"cpu_count": 2}, versions={"plugin": "x"}))


def _with(result: RunResult, counts: Any) -> RunResult:
    return dataclasses.replace(result, extra={**result.extra, "counts": counts})


def _md_rows(body: str) -> list[list[str]]:
    """The body rows of the work table(s) in ``body``."""
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    assert lines and lines[0] == ("| Operation | Statements per Job | Write Transactions per Job | "
                                  "Rows Changed per Job | Connections |"), body
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in lines[1:]]


def _html_rows(fragment: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", fragment)
    return [[unescape(c) for c in re.findall(r"<t[dh] [^>]*>(.*?)</t[dh]>", row)] for row in rows]


def _statements(text: str) -> tuple[float, dict[str, float]]:
    """``13.03 (select 1.00, update 4.00)`` -> (13.03, {"select": 1.0, "update": 4.0})."""
    match = re.fullmatch(r"([\d.]+)(?: \((.+)\))?", text)
    assert match, text
    kinds = dict(part.split(" ") for part in match.group(2).split(", ")) if match.group(2) else {}
    return float(match.group(1)), {kind: float(n) for kind, n in kinds.items()}


def _assert_rows_are(rows: list[list[str]], counts: dict[str, Any]) -> None:
    """Each operation's row is its counts divided by the jobs, in the lock table's order; the last is the total."""
    operations, jobs = counts["operations"], counts["jobs"]
    known = [op for op in OPERATION_ORDER if op in operations]
    assert [row[0].split(" ")[0] for row in rows] == [*known, *sorted(set(operations) - set(known)), "all"]
    assert rows[-1][0] == "all operations (successful path)"
    for row in rows:
        op = row[0].split(" ")[0]
        data, divide = (counts["per_job"], 1) if op == "all" else (operations[op], jobs)
        statements, kinds = _statements(row[1])
        assert statements == pytest.approx(data["statements"] / divide, abs=0.005), row
        assert kinds == pytest.approx({k: data[k] / divide for k in KINDS if data.get(k)}, abs=0.005), row
        assert list(kinds) == [k for k in KINDS if k in kinds], row  # always in the same order
        assert float(row[2]) == pytest.approx(data["write_transactions"] / divide, abs=0.005), row
        assert float(row[3]) == pytest.approx(data["rows_changed"] / divide, abs=0.005), row
        connections = counts["total" if op == "all" else "operations"]
        assert row[4] == str((connections if op == "all" else connections[op])["connections"]), row


class Terminal:
    """What write_summary writes, line by line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(title)

    def write_line(self, line: str, **markup: bool) -> None:
        self.lines.append(line)


def _assert_not_gated(line: str, counts: dict[str, Any]) -> None:
    match = NOT_GATED.fullmatch(line)
    assert match, line
    found = counts["not_gated"]
    assert [int(n) for n in match.groups()] == [found["retried_statements"], found["poll_statements"],
                                                found["harness_statements"]]


# ---------------------------------------------------------------- from a real run


def test_markdown_table_holds_the_runs_counts(tiny: RunResult) -> None:
    counts = tiny.extra["counts"]
    text = _render(tiny)
    body = section(text, WORK)
    assert COUNTS_MEANING in body and "`--quaero-baseline` gates the statements" in body
    rows = _md_rows(body)
    _assert_rows_are(rows, counts)
    _assert_not_gated(next(line for line in body.splitlines() if line.startswith("not gated")), counts)
    # what the sentence claims, measured on the built-in queue: each job is acked by exactly one DELETE, an
    # autocommit write, which this table counts as a write transaction (the lock table has no hold for it)
    by_op = {row[0]: row for row in rows}
    assert by_op["queue_delete"] == ["queue_delete", "1.00 (delete 1.00)", "1.00", "1.00", "0"]
    locks = {row.operation: row for row in lock_table(tiny).rows}
    assert locks["queue_delete"].write_transactions == 0
    # right after the write-lock table, under Database Lock Resilience, and no placeholder left
    assert text.index(LOCKS) < text.index(WORK) < text.index("### Queue Message Lifecycle")
    assert placeholders(text) == []
    assert "**Medium Load (500 jobs):** not measured: medium was not run" in body


def test_the_same_scenario_counts_the_same_work_twice(tiny: RunResult, tmp_path: Path) -> None:
    # the claim the table makes (exact, the same in every run) is what lets a baseline gate it without tolerance
    again = _run(tmp_path)
    first, second = count_table(tiny), count_table(again)
    assert [first.cells(row) for row in first.rows] == [second.cells(row) for row in second.rows]


def test_html_table_is_the_markdown_table(tiny: RunResult) -> None:
    fragment = counts_table_html(tiny, "gallery")
    assert re.search(r'<table class="quaero-counts-table" style="border-collapse: collapse', fragment)
    assert all("border: 1px solid" in cell for cell in re.findall(r"<t[dh] [^>]*>", fragment))
    header, *rows = _html_rows(fragment)
    assert header == list(CountTable.HEADERS)
    assert rows == _md_rows(section(_render(tiny), WORK))
    assert "<code>--quaero-baseline</code>" in fragment and "`" not in fragment
    _assert_not_gated(unescape(re.findall(r"<p>(not gated: [^<]*)</p>", fragment)[0]), tiny.extra["counts"])


def test_terminal_line_follows_the_write_lock_line(tiny: RunResult) -> None:
    each = tiny.extra["counts"]["per_job"]
    line = counts_line(tiny)
    kinds = ", ".join(f"{k} {each[k]:.2f}" for k in KINDS if each[k])
    assert line.startswith(f"  counts per job: {each['statements']:.2f} statements ({kinds}), "
                           f"{each['write_transactions']:.2f} write transactions, {each['rows_changed']:.2f} rows "
                           f"changed; {tiny.extra['counts']['total']['connections']} connections; not gated: "), line
    _assert_not_gated(line.split("; ", 2)[2], tiny.extra["counts"])

    terminal = Terminal()
    write_summary(terminal, [tiny])
    assert terminal.lines[terminal.lines.index(lock_line(tiny)) + 1] == line


# ---------------------------------------------------------------- the format, on the recorded shape


def test_every_row_kind_renders_as_documented(tiny: RunResult) -> None:
    body = section(_render(_with(tiny, SAMPLE)), WORK)
    assert [line for line in body.splitlines() if line.startswith("| ") or line.startswith("not gated")][1:] == [
        "| queue_delete | 1.00 (delete 1.00) | 1.00 | 1.00 | 0 |",
        "| create_child | 4.00 (insert 2.00, begin 1.00, commit 1.00) | 1.00 | 2.00 | 0 |",
        "| connect | 0.01 (other 0.01) | 0.00 | 0.00 | 7 |",
        "| zz_custom | 1.00 (select 1.00) | 0.00 | 0.00 | 0 |",
        "| all operations (successful path) | 12.00 (select 1.00, insert 2.00, update 3.00, delete 1.00, begin 2.00, "
        "commit 2.00, other 1.00) | 4.00 | 7.00 | 7 |",
        "not gated: 1 retried statement, 57 empty-poll statements, 48 harness statements",
    ]
    _assert_rows_are(_md_rows(body), SAMPLE)
    # a share too small for two decimals keeps two significant digits: never 0.00 for work that was done
    assert (per_job(0.0033), per_job(0.005), per_job(0), per_job(13.0333)) == ("0.0033", "0.01", "0.00", "13.03")


# ---------------------------------------------------------------- results without the counts


def test_a_result_without_counts_says_not_measured(tiny: RunResult) -> None:
    data = tiny.to_dict()
    del data["extra"]["counts"]
    old = RunResult.from_dict(data)  # as a JSON file or baseline from before the counts loads
    body = section(_render(old, tiny), WORK)  # an old result next to a new one, as a comparison shows them
    assert ("not measured: this result has no database work counts (it was recorded before pytest-quaero counted "
            "them); re-run the scenario") in body
    assert len(_md_rows(body)) == len(tiny.extra["counts"]["operations"]) + 1  # only the new run has a table
    assert counts_line(old) == ""
    assert "not measured" in counts_table_html(old, "gallery") and "<table" not in counts_table_html(old, "gallery")
    terminal = Terminal()
    write_summary(terminal, [old])
    assert lock_line(old) in terminal.lines and not [line for line in terminal.lines if "counts per job" in line]


@pytest.mark.parametrize("counts", [
    "garbage", {"operations": []}, {**SAMPLE, "jobs": "many"}, {**SAMPLE, "operations": {"save_job": "garbage"}},
    {**SAMPLE, "per_job": None}, {**SAMPLE, "not_gated": {"poll_statements": "some"}}, {**SAMPLE, "jobs": 0},
])
def test_a_reshaped_entry_degrades_to_not_measured(tiny: RunResult, counts: Any) -> None:
    odd = _with(tiny, counts)
    body = section(_render(odd), WORK)
    assert "**Gallery Load (30 jobs):** not measured: " in body and "| Operation" not in body
    assert "not measured" in counts_table_html(odd, "gallery")
    assert counts_line(odd).startswith("  counts per job: not measured: ")


# ---------------------------------------------------------------- the files a real session writes


def test_report_files_carry_the_counts(report_runs) -> None:
    run = report_runs.get("pass")
    data = run.json()["results"][0]
    counts = data["extra"]["counts"]
    body = section(run.text("md"), WORK)
    md_rows = _md_rows(body)
    _assert_rows_are(md_rows, counts)
    assert COUNTS_MEANING in body
    extras = [e["content"] for entries in run.html_data()["tests"].values() for e in entries[0]["extras"]
              if e["format_type"] == "html"]
    tables = [e for e in extras if "quaero-counts-table" in e]
    assert len(tables) == 1
    assert _html_rows(tables[0])[1:] == md_rows  # the same table in both reports
    line = counts_line(RunResult.from_dict(data))
    assert line.startswith("  counts per job: ") and line in run.stdout.splitlines()
