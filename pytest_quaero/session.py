"""The one object that owns a pytest session's quaero state, reached through one stash key.

Everything the wiring modules share (settings, chosen scenarios, the judged results
that travelled on test reports, the harness, the regression gate, hook-declared
scenarios, the xdist node factory) lives on :class:`QuaeroSession`. It is created
in ``pytest_configure``, stored under :data:`SESSION_KEY`, and registered once as the
plugin ``quaero-session``; nothing else keeps module globals or stash keys of its own.

While a session that runs load scenarios is running, SIGTERM ends it the way Ctrl-C
does (:class:`Terminated` is a KeyboardInterrupt): the runs stop at once, pytest prints
its summary, the files of an interrupted run are printed, and pytest exits with code 2
(``INTERRUPTED``). A second SIGTERM ends the process at once.

This module imports pytest and the pytest-free core only, so every wiring module
(items, fixtures, reports, xdist) can import it without an import cycle.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from pytest_quaero.core.settings import Settings

if TYPE_CHECKING:
    from pytest_quaero.core.gate import Gate
    from pytest_quaero.core.harness import Harness
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.core.scenarios import Scenario

__all__ = ["SESSION_KEY", "QuaeroSession", "Terminated", "carry_result", "session_of"]

#: the item stash key under which a run's result waits for its call report
_CARRIED_KEY = pytest.StashKey[list[dict[str, Any]]]()


class Terminated(KeyboardInterrupt):
    """SIGTERM during a session that runs scenarios: ends it like Ctrl-C (summary, exit code 2)."""

    signal_name = "SIGTERM"


@dataclass(eq=False)  # registered as a pytest plugin, which must stay hashable
class QuaeroSession:
    """Per-session state; one instance per pytest process (controller and each xdist worker)."""

    config: pytest.Config
    settings: Settings
    scenarios: list[Scenario] = field(default_factory=list)
    #: every judged result that reached this process on a test report (under xdist the
    #: controller gets them all); the summary and reports read these, never worker memory
    results: list[RunResult] = field(default_factory=list)
    #: the regression gate (baselines, fixes, contention, faults), or None when no gate option was given
    gate: Gate | None = None
    #: built-in scenarios plus those ``pytest_quaero_scenarios`` returned, found once
    known_scenarios: dict[str, Scenario] | None = None
    #: makes the scenario nodes; ``--quaero-shared-db`` swaps in shard and judge nodes
    make_scenario_nodes: Callable[..., list[pytest.Item]] | None = None
    _harness: Harness | None = None
    _running: bool = False
    #: the SIGTERM handler this session replaced, while its own is installed
    _previous_sigterm: tuple[Any] | None = None

    @property
    def harness(self) -> Harness:
        if self._harness is None:
            # deferred: the harness pulls in the run machinery, which an inactive session never pays for
            from pytest_quaero.core.harness import Harness

            self._harness = Harness(self.settings, make_base_dir=self._make_base_dir)
        if self._running:  # quaero_run in a session that chose no scenario: runs are coming
            self._catch_sigterm()
        return self._harness

    # --- SIGTERM ends a session that runs scenarios like Ctrl-C

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._running = True
        if self.scenarios:
            self._catch_sigterm()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._running = False
        self._release_sigterm()

    def _catch_sigterm(self) -> None:
        # Only pytest's own process, in its main thread (the only one Python lets set a handler),
        # not an xdist worker: the controller stops them, and their pools stop with them.
        if (self._previous_sigterm is not None or hasattr(self.config, "workerinput")
                or threading.current_thread() is not threading.main_thread()):
            return
        previous = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, self._on_sigterm)
        except (ValueError, OSError):  # not the main interpreter: leave SIGTERM alone
            return
        self._previous_sigterm = (signal.SIG_DFL if previous is None else previous,)
        self.config.add_cleanup(self._release_sigterm)

    def _release_sigterm(self) -> None:
        if self._previous_sigterm is None:
            return
        (previous,) = self._previous_sigterm
        self._previous_sigterm = None
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:  # not if someone replaced ours since
            signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._release_sigterm()  # a second SIGTERM ends the process at once
        raise Terminated("SIGTERM received: the session stops as on Ctrl-C (exit code 2)")

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        # The runs a KeyboardInterrupt cut short never reached a result (nor the result table):
        # their files are kept, and this is where the user learns where they are.
        interrupted = self._harness.interrupted if self._harness is not None else []
        if not interrupted:
            return
        terminalreporter.write_sep("=", "quaero: interrupted runs (files kept)")
        for run in interrupted:
            for line in run.summary_lines():
                terminalreporter.write_line(line, red=not line.startswith(" "))

    def _make_base_dir(self) -> Path:
        # Under --basetemp (which pytest-xdist sets per worker) when given, so a user who
        # chose where test files go finds the runs there; a fresh temporary folder otherwise.
        basetemp = self.config.getoption("basetemp", None)
        if basetemp:
            parent = Path(str(basetemp)).resolve()
            parent.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="quaero-", dir=parent))
        return Path(tempfile.mkdtemp(prefix="pytest-quaero-"))

    # --- results ride on test reports, so xdist ships them to the controller

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        carried = getattr(report, "quaero_results", None)
        if carried:
            # deferred: results arrive only in a session that ran a scenario
            from pytest_quaero.core.metrics import RunResult

            self.results.extend(RunResult.from_dict(data) for data in carried)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        carried = item.stash.get(_CARRIED_KEY, None)
        if carried and report.when in ("call", "setup") and (report.when == "call" or report.failed):
            report.quaero_results = carried
            item.stash[_CARRIED_KEY] = []
        return report


SESSION_KEY = pytest.StashKey[QuaeroSession]()


def session_of(config: pytest.Config) -> QuaeroSession:
    """The session's :class:`QuaeroSession` (set in ``pytest_configure``)."""
    return config.stash[SESSION_KEY]


def carry_result(item: pytest.Item, result: RunResult) -> None:
    """Have ``result`` ride on ``item``'s call report (as a dict, so xdist can ship it)."""
    item.stash.setdefault(_CARRIED_KEY, []).append(result.to_dict())
