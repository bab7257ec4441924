"""A live progress line per running scenario: done/total, queue length, jobs/s, lock errors.

On a terminal the line rewrites itself in place (``\\r``) a few times a second; when
the output is not a terminal (CI logs) a plain line is printed when the scenario
starts, every ``interval`` seconds, and when it ends. Under ``-q`` nothing extra is
printed, and xdist workers print nothing (their output is not forwarded). The numbers
come from the run's own ``on_progress`` callback; nothing here measures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.core.run import Progress

__all__ = ["MODES", "ProgressDisplay", "choose_mode", "format_final", "format_progress"]

MODES = ("auto", "live", "plain", "off")
#: how often the in-place line is redrawn at most, seconds (the run samples every 0.25s)
LIVE_REFRESH = 0.1
#: how often a plain line is printed while a scenario runs, seconds
PLAIN_INTERVAL = 10.0


def format_progress(p: Progress) -> str:
    pct = 100.0 * p.done / p.total if p.total else 0.0
    return (f"quaero[{p.scenario}] {p.done}/{p.total} jobs ({pct:.0f}%), queue {p.queue_length}, "
            f"{p.jobs_per_second:.1f} jobs/s, {p.busy_errors} busy errors, {p.elapsed:.1f}s")


def format_final(result: RunResult) -> str:
    status = "PASS" if result.passed else "FAIL"
    return (f"quaero[{result.scenario}] done: {result.jobs_completed}/{result.total_jobs} jobs in "
            f"{result.execution_time:.2f}s, {result.throughput:.1f} jobs/s, {result.messages_left} messages left, "
            f"{result.busy_errors} busy errors: {status}")


def choose_mode(requested: str, *, verbosity: int, isatty: bool, live_logging: bool, worker: bool) -> str:
    """``live``, ``plain`` or ``off`` for this session."""
    if worker or requested == "off":
        return "off"
    if requested in ("live", "plain"):
        return requested
    if verbosity < 0:
        return "off"
    # live log lines would tear an in-place line apart; plain lines interleave cleanly
    return "live" if isatty and not live_logging else "plain"


@dataclass
class ProgressDisplay:
    """Writes progress through pytest's terminal reporter (``write``, ``write_line``, ``ensure_newline``)."""

    terminal: Any
    mode: str
    interval: float = PLAIN_INTERVAL
    clock: Callable[[], float] = time.monotonic
    #: pytest's capture manager: output written mid-test must bypass capturing
    capture: Any = None
    _last: dict[str, float] = field(default_factory=dict)
    _width: int = 0
    _location: Path | None = None

    @contextlib.contextmanager
    def _uncaptured(self) -> Iterator[None]:
        if self.capture is None:
            yield
            return
        with self.capture.global_and_fixture_disabled():
            yield

    def update(self, progress: Progress) -> None:
        if self.mode == "off":
            return
        now = self.clock()
        last = self._last.get(progress.scenario)
        if last is not None and now - last < (LIVE_REFRESH if self.mode == "live" else self.interval):
            return
        self._last[progress.scenario] = now
        with self._uncaptured():
            if last is None:
                self._begin()
            self._emit(format_progress(progress))

    def finish(self, result: RunResult) -> None:
        if self.mode == "off":
            return
        with self._uncaptured():
            if self._last.pop(result.scenario, None) is None:
                self._begin()
            text = format_final(result)
            # left unterminated: restoring the location below (or pytest's next line) ends it
            carriage = "\r" if self.mode == "live" else ""
            self.terminal.write(carriage + text + " " * max(0, self._width - len(text)), flush=True)
            self._width = 0
            self._restore()

    def _begin(self) -> None:
        """Start on a line of our own, remembering the test location pytest had written."""
        current = getattr(self.terminal, "currentfspath", None)
        self._location = current if isinstance(current, Path) else None
        self.terminal.ensure_newline()
        self._width = 0

    def _emit(self, text: str) -> None:
        if self.mode == "live":
            padding = " " * max(0, self._width - len(text))
            self.terminal.write("\r" + text + padding, flush=True)
            self._width = len(text)
        else:
            self.terminal.write_line(text)

    def _restore(self) -> None:
        """Re-print ``quaero[light] `` so the result letters that follow sit behind their location.

        In -v mode pytest re-prints the full location itself (``currentfspath`` holds text, not
        a path, and ensure_newline cleared it), so only a path location needs restoring.
        """
        location, self._location = self._location, None
        if location is None:
            return  # pytest ends the line when it writes the next location (-v) or summary
        try:
            relative = location.relative_to(self.terminal.config.rootpath)
        except ValueError:
            self.terminal.write_line("")
            return
        self.terminal.write_fspath_result(str(relative), "")


def install(config: Any, harness: Any, mode: str) -> ProgressDisplay | None:
    """Hook a display into ``harness`` (its ``on_progress`` and ``on_result``), keeping any callback already there."""
    terminal = config.pluginmanager.getplugin("terminalreporter")
    if terminal is None or mode == "off":
        return None
    display = ProgressDisplay(terminal, mode, capture=config.pluginmanager.getplugin("capturemanager"))
    previous = harness.on_progress

    def on_progress(progress: Progress) -> None:
        if previous is not None:
            previous(progress)
        display.update(progress)

    harness.on_progress = on_progress
    harness.on_result.append(display.finish)
    return display
