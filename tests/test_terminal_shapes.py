"""The terminal output of a light run under -q, the default verbosity and -v, against the shape each should have.

Each expected shape is a list of regular expressions, one per line the terminal shows
(after carriage returns are applied): the session's own lines in order, nothing else
between them.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from reportkit import FAST, screen

# the shared report runs (fixtures report_runs, report_store)
pytest_plugins = ["reportkit"]

HEADING = r"quaero\[light\] 5 x 20 = 100 jobs, 2 thread workers: {status} \(100/100 jobs in [\d.]+s, [\d.]+ jobs/s, " \
          r"\d+ busy errors\)"
TABLE_HEAD = r"  criterion +measured +required +status"
ROW = r"  \w[\w ]+?  .+  (PASS|FAIL)"
SEP = r"=+ quaero load test results =+"


def _shape(lines: list[str], expected: list[str]) -> None:
    """``lines`` match ``expected`` one for one; ``(ROW)*`` stands for any number of criterion rows."""
    i = 0
    for pattern in expected:
        if pattern == "(ROW)*":
            while i < len(lines) and re.fullmatch(ROW, lines[i]):
                i += 1
            continue
        assert i < len(lines), f"ran out of lines looking for {pattern!r}:\n" + "\n".join(lines)
        assert re.fullmatch(pattern, lines[i]), f"line {i}: {lines[i]!r} is not {pattern!r}\n" + "\n".join(lines)
        i += 1
    assert i == len(lines), "unexpected lines:\n" + "\n".join(lines[i:])


def _run(pytester: pytest.Pytester, *args: str) -> tuple[Any, list[str]]:
    result = pytester.runpytest_subprocess("--quaero-scenario=light", *FAST, "-p", "no:cacheprovider", *args)
    raw = (pytester.path / "stdout").read_bytes().decode("utf-8")
    return result, [line for line in screen(raw) if line.strip()]


def test_quiet_passing_run_is_one_summary_line(pytester: pytest.Pytester) -> None:
    result, lines = _run(pytester, "-q")
    assert result.ret == 0
    assert len(lines) <= 6, lines
    _shape(lines, [r"\.{10} +\[100%\]", SEP, HEADING.format(status="PASS"), r"10 passed in [\d.]+s"])


@pytest.mark.slow  # a run of its own, for the colour codes
def test_quiet_failing_run_shows_its_table_with_the_fail_row_in_red(pytester: pytest.Pytester) -> None:
    result, lines = _run(pytester, "-q", "--color=yes", "--quaero-threshold=light.min_throughput=100000")
    assert result.ret == 1
    raw = (pytester.path / "stdout").read_bytes().decode("utf-8")
    throughput = next(line for line in raw.splitlines() if line.lstrip("\x1b[0123456789;m").startswith("  Throughput"))
    assert throughput.startswith("\x1b[31m\x1b[1m") or throughput.startswith("\x1b[1m\x1b[31m"), repr(throughput)
    execution = next(line for line in raw.splitlines() if "  Execution Time " in line)
    assert "\x1b[31m" not in execution  # only the failing row is red
    start = next(i for i, line in enumerate(lines) if re.fullmatch(SEP, line))
    end = next(i for i, line in enumerate(lines) if re.fullmatch(r"=+ short test summary info =+", line))
    _shape(lines[start:end], [SEP, HEADING.format(status="FAIL"), TABLE_HEAD, "(ROW)*", r"  database kept: .*",
                              r"  log kept: .*", r"  inspect with: .*"])


def test_default_verbosity_keeps_the_location_and_its_letters_together(report_runs: Any) -> None:
    run = report_runs.get("pass")
    # pytest's own lines about files (junit, html) are not this plugin's
    lines = [line for line in run.stdout.splitlines() if line.strip() and not line.startswith(("- generated", "---"))]
    start = next(i for i, line in enumerate(lines) if line.startswith("quaero[light] "))
    end = next(i for i, line in enumerate(lines) if re.fullmatch(SEP, line))
    # the progress continues the location's line (no lone "quaero[light]"), then the letters follow it
    _shape(lines[start:end], [
        r"quaero\[light\] \[-{20}\] 0/100 jobs \(0%\), queue \d+, [\d.]+ jobs/s, ETA \?, \d+ busy errors, [\d.]+s",
        r"quaero\[light\] done: 100/100 jobs in [\d.]+s, [\d.]+ jobs/s, 0 messages left, \d+ busy errors: PASS",
        r"quaero\[light\] \.{10} +\[100%\]",
    ])
    written = next(i for i, line in enumerate(lines) if i > end and line.startswith("quaero: "))  # files written
    _shape(lines[end:written], [SEP, HEADING.format(status="PASS"), TABLE_HEAD, "(ROW)*", r"  write lock: held .*",
                                r"  counts per job: .*"])


@pytest.mark.slow  # a run of its own
def test_verbose_run_names_every_criterion(pytester: pytest.Pytester) -> None:
    result, lines = _run(pytester, "-v")
    assert result.ret == 0
    items = [line for line in lines if line.startswith("quaero[light]::")]
    # the first item's line carries the progress (the run is in its setup), then every item its result
    assert re.fullmatch(r"quaero\[light\]::execution_time \[-{20}\] 0/100 jobs \(0%\), .*", items[0]), items[0]
    assert len(items) == 11
    for line in items[1:]:
        assert re.fullmatch(r"quaero\[light\]::\w+ PASSED +\[ *\d+%\]", line), line
    end = next(i for i, line in enumerate(lines) if re.fullmatch(SEP, line))
    _shape(lines[end:], [SEP, HEADING.format(status="PASS"), TABLE_HEAD, "(ROW)*", r"  write lock: held .*",
                         r"  counts per job: .*", r"=+ 10 passed in [\d.]+s =+"])
