"""Live progress: an in-place line on a terminal, periodic plain lines otherwise, nothing under -q."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from reportkit import FAST, screen

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.run import Progress
from pytest_quaero.report.progress import PLAIN_INTERVAL, ProgressDisplay, choose_mode, eta, format_progress

# the shared report runs (fixtures report_runs, report_store)
pytest_plugins = ["reportkit"]


@dataclass
class FakeConfig:
    rootpath: Path


@dataclass
class FakeWriter:
    """pytest's TerminalWriter bookkeeping: the line's width so far (raw writes are not counted)."""

    fullwidth: int = 120
    width_of_current_line: int = 0


@dataclass
class FakeTerminal:
    """The parts of pytest's TerminalReporter the display uses, recording what was written."""

    rootpath: Path
    out: list[str] = field(default_factory=list)
    currentfspath: Any = None
    _tw: FakeWriter = field(default_factory=FakeWriter)

    @property
    def config(self) -> FakeConfig:
        return FakeConfig(self.rootpath)

    def ensure_newline(self) -> None:
        if self.currentfspath:
            self.write("\n")
            self.currentfspath = None

    def write(self, text: str, flush: bool = False) -> None:
        self.out.append(text)
        line = text.rsplit("\n", 1)[-1]
        self._tw.width_of_current_line = len(line) + (0 if "\n" in text else self._tw.width_of_current_line)

    def write_raw(self, text: str, flush: bool = False) -> None:
        self.out.append(text)

    def flush(self) -> None:
        pass

    def write_line(self, text: str) -> None:
        self.ensure_newline()
        self.write(text + "\n")

    def write_fspath_result(self, nodeid: str, res: str) -> None:
        self.currentfspath = self.rootpath / nodeid
        self.write(f"\n{nodeid} {res}")

    def shown(self) -> list[str]:
        return screen("".join(self.out))


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


def test_live_text_sits_after_the_location_and_leaves_no_trace(tmp_path: Path, report_runs) -> None:
    terminal, clock = FakeTerminal(tmp_path), Clock()
    terminal.write_fspath_result("quaero[light]", "")  # pytest, as the scenario's first item starts
    display = ProgressDisplay(terminal, "live", clock=clock)
    display.update(_progress(0, 0.0))
    clock.now = 0.05
    display.update(_progress(10, 0.05))  # within the refresh interval: not drawn
    clock.now = 0.2
    display.update(_progress(50, 0.2))
    # on the location's own line, no lone "quaero[light]" line above it, the scenario not named twice
    assert terminal.shown() == ["", "quaero[light] [##########----------] 50/100 jobs (50%), queue 50, 250.0 jobs/s, "
                                    "ETA 0.2s, 2 busy errors, 0.2s"]
    assert len([o for o in terminal.out if "jobs (" in o]) == 2
    display.finish(_result(report_runs))
    terminal.write("..........")  # pytest's result letters follow on the same line
    assert terminal.shown() == ["", "quaero[light] .........."]


def test_live_text_after_result_letters_keeps_them(tmp_path: Path) -> None:
    # a quaero_run() test in a file whose other tests already printed their letters
    terminal, clock = FakeTerminal(tmp_path), Clock()
    terminal.write_fspath_result("test_mine.py", "..")
    display = ProgressDisplay(terminal, "live", clock=clock)
    display.update(Progress("custom", 3, 30, 27, 0.5, 0))
    assert terminal.shown()[-1].startswith("test_mine.py ..quaero[custom] [##------------------] 3/30 jobs")
    terminal._tw.fullwidth = 40  # a narrow terminal: the text is cut, never wrapped onto a line it cannot erase
    clock.now = 1.0
    display.update(Progress("custom", 6, 30, 24, 1.0, 0))
    assert len(terminal.shown()[-1]) <= 39
    display.finish(dataclasses_result("custom"))
    terminal.write(".")
    assert terminal.shown() == ["", "test_mine.py ..."]  # the dots line is not split


def dataclasses_result(scenario: str) -> RunResult:
    return RunResult(scenario=scenario, parents=3, children_per_parent=10, run_id="r1", settings={})


def test_eta_and_bar() -> None:
    assert eta(Progress("light", 0, 100, 100, 0.0, 0)) == "?"
    assert eta(Progress("light", 50, 100, 50, 2.0, 0)) == "2.0s"
    assert eta(Progress("light", 100, 100, 0, 2.0, 0)) == "0s"
    assert eta(Progress("heavy", 10, 1500, 1490, 10.0, 0)) == "24m50s"
    assert "[####----------------] 20/100 jobs (20%)" in format_progress(Progress("light", 20, 100, 80, 1.0, 0))
    assert ", 3 busy errors, " in format_progress(Progress("light", 20, 100, 80, 1.0, 3))
    # a PostgreSQL run (also one a marker started in a SQLite session) names them as its backend does
    assert ", 3 lock errors, " in format_progress(Progress("light", 20, 100, 80, 1.0, 3, "postgresql"))


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


def test_plain_first_line_continues_the_location(tmp_path: Path, report_runs) -> None:
    terminal, clock = FakeTerminal(tmp_path), Clock()
    terminal.write_fspath_result("quaero[light]", "")
    display = ProgressDisplay(terminal, "plain", clock=clock)
    display.update(_progress(0, 0.0))
    display.finish(_result(report_runs))
    terminal.write("..........")
    shown = terminal.shown()
    assert shown[1].startswith("quaero[light] [--------------------] 0/100 jobs")  # no lone "quaero[light]" line
    assert shown[2].startswith("quaero[light] done: 100/100 jobs")
    assert shown[3] == "quaero[light] .........."


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
    assert "\x1b7" in raw and "/100 jobs (" in raw  # it was drawn
    shown = screen(raw)
    # ... and erased: the location and its letters on one line, no progress left on the screen
    assert next(line for line in shown if line.startswith("quaero[light]")).startswith("quaero[light] ..........")
    assert not [line for line in shown if "jobs (" in line]


@pytest.mark.slow  # a whole pytest session of its own: CI runs it with -m slow
def test_xdist_controller_announces_each_scenario(report_runs) -> None:
    out = report_runs.get("xdist").stdout
    assert out.count("quaero[light] load started on an xdist worker (100 jobs)") == 1


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
