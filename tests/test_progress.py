"""Live progress: an in-place line on a terminal, periodic plain lines otherwise, nothing under -q."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reportkit import FAST

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.run import Progress
from pytest_quaero.report.progress import PLAIN_INTERVAL, ProgressDisplay, choose_mode, format_progress

# the shared report runs (fixtures report_runs, report_store)
pytest_plugins = ["reportkit"]


@dataclass
class FakeConfig:
    rootpath: Path


@dataclass
class FakeTerminal:
    """The parts of pytest's TerminalReporter the display uses, recording what was written."""

    rootpath: Path
    out: list[str] = field(default_factory=list)
    currentfspath: Any = None

    @property
    def config(self) -> FakeConfig:
        return FakeConfig(self.rootpath)

    def ensure_newline(self) -> None:
        if self.currentfspath:
            self.out.append("\n")
            self.currentfspath = None

    def write(self, text: str, flush: bool = False) -> None:
        self.out.append(text)

    def write_line(self, text: str) -> None:
        self.ensure_newline()
        self.out.append(text + "\n")

    def write_fspath_result(self, nodeid: str, res: str) -> None:
        self.currentfspath = self.rootpath / nodeid
        self.out.append(f"\n{nodeid} {res}")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _progress(done: int, elapsed: float) -> Progress:
    return Progress("light", done, 100, 100 - done, elapsed, 2)


def _result(report_runs) -> RunResult:
    from pytest_quaero.core.results_json import results_from

    return results_from(report_runs.get("pass").json())[0]


def test_live_line_rewrites_itself_and_is_throttled(tmp_path: Path, report_runs) -> None:
    terminal, clock = FakeTerminal(tmp_path, currentfspath=tmp_path / "quaero[light]"), Clock()
    display = ProgressDisplay(terminal, "live", clock=clock)
    display.update(_progress(0, 0.0))
    assert terminal.out[0] == "\n"  # leaves pytest's "quaero[light] " line first
    clock.now = 0.05
    display.update(_progress(10, 0.05))  # within the refresh interval: not drawn
    clock.now = 0.2
    display.update(_progress(50, 0.2))
    drawn = [o for o in terminal.out if o.startswith("\r")]
    assert drawn == ["\r" + format_progress(_progress(0, 0.0)),
                     "\r" + format_progress(_progress(50, 0.2)).ljust(len(format_progress(_progress(0, 0.0))))]
    assert "quaero[light] 50/100 jobs (50%), queue 50, 250.0 jobs/s, 2 busy errors, 0.2s" in drawn[1]
    display.finish(_result(report_runs))
    assert terminal.out[-2].startswith("\rquaero[light] done: 100/100 jobs")
    # the location is re-printed so the result letters that follow sit behind it
    assert terminal.out[-1] == "\nquaero[light] " and terminal.currentfspath == tmp_path / "quaero[light]"


def test_plain_lines_come_at_the_interval(tmp_path: Path, report_runs) -> None:
    terminal, clock = FakeTerminal(tmp_path), Clock()
    display = ProgressDisplay(terminal, "plain", clock=clock)
    for second in range(0, 25):
        clock.now = float(second)
        display.update(_progress(second * 4, float(second)))
    lines = [o for o in terminal.out if o.endswith("\n")]
    assert [line.split(",")[-1].strip() for line in lines] == ["0.0s", f"{PLAIN_INTERVAL:.1f}s", "20.0s"]
    assert not any("\r" in o for o in terminal.out)
    display.finish(_result(report_runs))
    assert terminal.out[-1].startswith("quaero[light] done: 100/100 jobs in ")


def test_off_writes_nothing(tmp_path: Path, report_runs) -> None:
    terminal = FakeTerminal(tmp_path)
    display = ProgressDisplay(terminal, "off")
    display.update(_progress(1, 1.0))
    display.finish(_result(report_runs))
    assert terminal.out == []


@pytest.mark.parametrize(
    ("requested", "verbosity", "isatty", "live_logging", "worker", "expected"),
    [
        ("auto", 0, True, False, False, "live"),
        ("auto", 0, False, False, False, "plain"),
        ("auto", 1, True, True, False, "plain"),  # live log lines would tear an in-place line
        ("auto", -1, True, False, False, "off"),  # -q
        ("auto", 0, True, False, True, "off"),  # xdist worker: nobody sees its output
        ("live", -1, False, False, False, "live"),
        ("plain", 0, True, False, False, "plain"),
        ("off", 2, True, False, False, "off"),
    ],
)
def test_choose_mode(requested: str, verbosity: int, isatty: bool, live_logging: bool, worker: bool,
                     expected: str) -> None:
    assert choose_mode(requested, verbosity=verbosity, isatty=isatty, live_logging=live_logging,
                       worker=worker) == expected


def test_plain_progress_in_a_real_session(report_runs) -> None:
    run = report_runs.get("pass")  # pytester output is no terminal: plain lines
    lines = run.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("quaero[light] 0/100 jobs")
                 or line.startswith("quaero[light] done:"))
    done = next(i for i, line in enumerate(lines) if line.startswith("quaero[light] done: 100/100 jobs"))
    assert first <= done
    assert lines[done + 1].startswith("quaero[light] ........")
    assert "\r" not in run.stdout


def test_quiet_session_prints_no_progress(report_runs) -> None:
    run = report_runs.get("fail")  # run with -q
    assert "quaero[light] done:" not in run.stdout and "jobs (0%)" not in run.stdout


def test_live_mode_in_a_real_session(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--quaero-scenario=light", *FAST, "--quaero-progress=live")
    assert result.ret == 0
    # pytester's own lines are split on "\r" too; the raw file it captured keeps them
    raw = (pytester.path / "stdout").read_bytes().decode("utf-8")
    assert "\rquaero[light] done: 100/100 jobs" in raw
    assert "\rquaero[light] 0/100 jobs (0%)" in raw or "\rquaero[light] 100/100 jobs" in raw
    after = raw.split("\rquaero[light] done: ", 1)[1]
    # the in-place line ends where pytest re-prints the location for the result letters
    assert re.match(r"100/100 jobs in [\d.]+s, [\d.]+ jobs/s, 0 messages left, \d+ busy errors: PASS\n"
                    r"quaero\[light\] \.{8}", after), after[:200]


def test_unknown_progress_mode_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--quaero-progress=loud")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quaero-progress: invalid choice: 'loud' (choose from*auto*live*plain*off*"])


def test_live_log_names_the_worker_and_progress_stays_plain(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--quaero-scenario=light", *FAST, "--log-cli-level=INFO",
                                "--log-cli-format=%(asctime)s %(levelname)-5s %(name)s %(message)s")
    assert result.ret == 0
    # time, level, worker name, message: the template's appendix lines, live
    result.stdout.fnmatch_lines([
        "*:* INFO  pytest_quaero.WorkerPool Starting worker pool with 2 workers*",
        "*:* INFO  pytest_quaero.JobWorker-1 Worker 1 started successfully*",
        "*:* INFO  pytest_quaero.JobWorker-2 Worker 2 started successfully*",
        "quaero?light? done: 100/100 jobs*",  # ? : fnmatch reads [light] as a character class
    ])
