"""A live progress line per running scenario: done/total, queue length, jobs/s, lock errors.

On a terminal the text (a bar, done/total, jobs/s, an ETA) rewrites itself in place
after pytest's current line a few times a second and is erased when the scenario ends;
when the output is not a terminal (CI logs) a plain line is printed when the scenario
starts, every ``interval`` seconds, and when it ends. Under ``-q`` nothing extra is
printed. xdist workers print nothing (their output is not forwarded), so the controller
announces each scenario's start instead (:func:`announce`). The numbers come from the
run's own ``on_progress`` callback; nothing here measures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_quaero.report.wording import words_of

if TYPE_CHECKING:
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.core.run import Progress

__all__ = ["MODES", "ProgressDisplay", "announce", "bar", "choose_mode", "eta", "format_final", "format_progress"]

MODES = ("auto", "live", "plain", "off")
#: how often the in-place line is redrawn at most, seconds (the run samples every 0.25s)
LIVE_REFRESH = 0.1
#: how often a plain line is printed while a scenario runs, seconds
PLAIN_INTERVAL = 10.0
BAR_WIDTH = 20
#: VT100 save cursor, restore cursor, erase to the end of the line: the live text sits after whatever
#: pytest had written on the line (its location, its result letters) and is erased without a trace
_SAVE, _RESTORE, _ERASE = "\x1b7", "\x1b8", "\x1b[K"
#: a live line with less room than this on the terminal's current line is not drawn
_MIN_ROOM = 12


def bar(fraction: float) -> str:
    """``[########------------]``: ``fraction`` of BAR_WIDTH filled."""
    filled = max(0, min(BAR_WIDTH, round(fraction * BAR_WIDTH)))
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def eta(p: Progress) -> str:
    """Time left at the rate so far, or ``?`` before the first job is done."""
    if p.total and p.done >= p.total:
        return "0s"
    rate = p.jobs_per_second
    if rate <= 0:
        return "?"
    left = (p.total - p.done) / rate
    return f"{left:.1f}s" if left < 120 else f"{int(left // 60)}m{int(left % 60):02d}s"


def format_progress(p: Progress) -> str:
    """The running line; lock errors named as the run's backend names them (:attr:`DbWords.errors`)."""
    errors = words_of({"backend": p.backend}).errors
    fraction = p.done / p.total if p.total else 0.0
    return (f"quaero[{p.scenario}] {bar(fraction)} {p.done}/{p.total} jobs ({100 * fraction:.0f}%), "
            f"queue {p.queue_length}, {p.jobs_per_second:.1f} jobs/s, ETA {eta(p)}, {p.busy_errors} {errors}, "
            f"{p.elapsed:.1f}s")


def format_final(result: RunResult) -> str:
    status = "PASS" if result.passed else "FAIL"
    return (f"quaero[{result.scenario}] done: {result.jobs_completed}/{result.total_jobs} jobs in "
            f"{result.execution_time:.2f}s, {result.throughput:.1f} jobs/s, {result.messages_left} messages left, "
            f"{result.busy_errors} {words_of(result).errors}: {status}")


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
    """Writes progress through pytest's terminal reporter.

    ``live``: drawn after whatever pytest's current line holds and erased when the scenario
    ends, so the location and its result letters stay on one line (the summary has the
    outcome). ``plain``: lines of their own; the first continues a line that holds only the
    scenario's location, and the location is re-printed for the result letters that follow.
    """

    terminal: Any
    mode: str
    interval: float = PLAIN_INTERVAL
    clock: Callable[[], float] = time.monotonic
    #: pytest's capture manager: output written mid-test must bypass capturing
    capture: Any = None
    _last: dict[str, float] = field(default_factory=dict)
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
            if self.mode == "live":
                self._draw(progress, first=last is None)
            elif last is None:
                self._begin(format_progress(progress), progress.scenario)
            else:
                self.terminal.write_line(format_progress(progress))

    def finish(self, result: RunResult) -> None:
        if self.mode == "off":
            return
        with self._uncaptured():
            started = self._last.pop(result.scenario, None) is not None
            if self.mode == "live":
                if started:
                    self.terminal.write_raw(_RESTORE + _ERASE, flush=True)
                return
            text = format_final(result)
            if not started:
                self._begin(text, result.scenario, final=True)
            else:
                # left unterminated: restoring the location below (or pytest's next line) ends it
                self.terminal.write(text, flush=True)
            self._restore()

    # ------------------------------------------------------------ live

    def _draw(self, progress: Progress, *, first: bool) -> None:
        terminal = self.terminal
        terminal.flush()  # pytest's own text first, so the saved cursor sits after it
        text = format_progress(progress)
        if self._on_location(progress.scenario):
            text = text.removeprefix(f"quaero[{progress.scenario}] ")
        room = _fullwidth(terminal) - _current_width(terminal) - 1
        if room < _MIN_ROOM:
            return
        # never wider than what is left of the line: a wrapped line could not be erased
        terminal.write_raw((_SAVE if first else _RESTORE + _ERASE) + text[:room], flush=True)

    # ------------------------------------------------------------ plain

    def _on_location(self, scenario: str) -> bool:
        """Whether pytest's current line holds just the scenario's location: ``quaero[<scenario>] `` (no
        result letter yet), or under -v the item's ``quaero[<scenario>]::<criterion> ``."""
        current = getattr(self.terminal, "currentfspath", None)
        if isinstance(current, Path):
            return current.name == f"quaero[{scenario}]" and _current_width(self.terminal) == len(current.name) + 1
        return (isinstance(current, str) and current.startswith(f"quaero[{scenario}]::")
                and _current_width(self.terminal) == len(current))

    def _begin(self, text: str, scenario: str, *, final: bool = False) -> None:
        """The first plain line: on the line of the scenario's location when it holds nothing else."""
        current = getattr(self.terminal, "currentfspath", None)
        self._location = current if isinstance(current, Path) else None
        if self._on_location(scenario):
            self.terminal.write(text.removeprefix(f"quaero[{scenario}] ") + ("" if final else "\n"), flush=True)
            self.terminal.currentfspath = None  # the line pytest had is ended (or ends with this text)
            return
        self.terminal.ensure_newline()
        if final:
            self.terminal.write(text, flush=True)
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


def _fullwidth(terminal: Any) -> int:
    writer = getattr(terminal, "_tw", None)
    return int(getattr(writer, "fullwidth", 80))


def _current_width(terminal: Any) -> int:
    """How much of the current line pytest has written (its own bookkeeping; our raw writes are not in it)."""
    writer = getattr(terminal, "_tw", None)
    return int(getattr(writer, "width_of_current_line", 0))


def announce(terminal: Any, nodeid: str, scenarios: Any, announced: set[str]) -> None:
    """Under xdist the controller sees no progress: say which scenario started its load, once each."""
    name = nodeid.split("::", 1)[0]
    if not (name.startswith("quaero[") and name.endswith("]")) or name in announced:
        return
    announced.add(name)
    scenario = next((s for s in scenarios if f"quaero[{s.name}]" == name), None)
    size = f" ({scenario.total_jobs} jobs)" if scenario is not None else ""
    terminal.write_line(f"{name} load started on an xdist worker{size}; live progress stays on the worker, "
                        "the results follow in the summary")


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
