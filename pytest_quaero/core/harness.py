"""A pytest session's load runs: run a scenario, judge it, keep or tidy its files.

The criteria items and the ``quaero_run`` fixture both come here, so a scenario is
run, judged and cleaned up the same way whichever asked for it. The harness keeps no
results: each one rides on a test report (``plugin.carry_result``), so the summary and
reports read the same thing with and without pytest-xdist.

A run cut short by Ctrl-C (or SIGTERM, which the session turns into the same
KeyboardInterrupt) never gets a result; its files are kept, and the harness records
where they are (:attr:`Harness.interrupted`) for the session's summary to print.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_quaero.core.criteria import Thresholds, Verdict, evaluate, thresholds_for
from pytest_quaero.core.jobs import Handler
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.monitor import Progress
from pytest_quaero.core.run import run_files, run_scenario
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.worker import EndpointFactory, open_endpoint

__all__ = ["Harness", "InterruptedRun"]


@dataclass(frozen=True)
class InterruptedRun:
    """A run that a KeyboardInterrupt (Ctrl-C, or SIGTERM through the session) cut short: its files stay."""

    scenario: str
    db_path: str
    log_path: str
    #: what stopped it: ``SIGINT`` (Ctrl-C) or the signal the session turned into a KeyboardInterrupt
    signal: str
    seconds: float

    def kept(self) -> list[tuple[str, str]]:
        """``(what, path)`` of each file of the run that exists: ``database``, ``log``."""
        return [(what, path) for what, path in (("database", self.db_path), ("log", self.log_path))
                if os.path.exists(path)]

    def summary_lines(self) -> list[str]:
        """What the terminal summary says about it: the heading, then each kept file (as for a failed run)."""
        how = "SIGINT (Ctrl-C)" if self.signal == "SIGINT" else self.signal
        kept = self.kept()
        if not kept:
            return [f"quaero[{self.scenario}] interrupted by {how} after {self.seconds:.1f}s, before it wrote any file"]
        lines = [f"quaero[{self.scenario}] interrupted by {how} after {self.seconds:.1f}s: no verdict; "
                 "its files are kept as the interrupt left them (unfinished jobs keep their messages)"]
        lines += [f"  {what + ' kept:':<15}{path}" for what, path in kept]
        if os.path.exists(self.db_path):
            lines.append(f"  inspect with:  sqlite3 {self.db_path}")
        return lines


@dataclass
class Harness:
    """Runs scenarios for one pytest session (or one xdist worker)."""

    settings: Settings
    base_dir: Path | None = None
    make_base_dir: Callable[[], Path] | None = None
    on_progress: Callable[[Progress], None] | None = None
    on_result: list[Callable[[RunResult], None]] = field(default_factory=list)
    #: runs cut short by a KeyboardInterrupt, in the order they were interrupted
    interrupted: list[InterruptedRun] = field(default_factory=list)
    _runs: int = 0

    def thresholds(self, scenario: Scenario, settings: Settings | None = None) -> Thresholds:
        settings = settings or self.settings
        return thresholds_for(scenario, settings.thresholds, settings.threshold_sources)

    def _run_dir(self, scenario: Scenario) -> Path:
        if self.base_dir is None:
            self.base_dir = self.make_base_dir() if self.make_base_dir else Path(tempfile.mkdtemp(prefix="quaero-"))
        self._runs += 1
        return self.base_dir / f"{self._runs:02d}-{scenario.name}"

    def run(
        self,
        scenario: Scenario,
        settings: Settings | None = None,
        *,
        handler: Handler | None = None,
        endpoint_factory: EndpointFactory = open_endpoint,
        thresholds: Thresholds | None = None,
        extensions: Any = None,
        finalize: bool = True,
        **run_options: Any,
    ) -> RunResult:
        """Run ``scenario`` once, attach its verdicts, and keep its files only if it failed.

        ``extensions`` (:class:`pytest_quaero.extension.Extensions` of the asking node)
        brings in the ``pytest_quaero_*`` hooks: handler, queue/store, extra criteria,
        result observers. Explicit ``handler``/``endpoint_factory`` arguments win.
        With ``finalize=False`` the caller adds verdicts of its own (the regression gate)
        and then calls :meth:`finalize`, so kept files and observers see every verdict.
        """
        settings = settings or self.settings
        thresholds = thresholds or self.thresholds(scenario, settings)
        if extensions is not None:
            handler = handler or extensions.handler(settings)
            if endpoint_factory is open_endpoint:
                endpoint_factory = extensions.endpoint_factory(settings)
        run_dir = self._run_dir(scenario)
        began = time.monotonic()

        def judge(result: RunResult) -> list[Verdict]:
            verdicts = evaluate(result, thresholds)
            if extensions is not None:
                verdicts += extensions.extra_verdicts(scenario, result, thresholds)
            return verdicts

        try:
            if settings.explore or settings.replay:  # N explored schedules, each judged (core/explore)
                from pytest_quaero.core.explore.runner import explore_run  # deferred: only exploring needs it

                return self._judged(explore_run(
                    scenario, settings, run_dir=run_dir, judge=judge, handler=handler,
                    endpoint_factory=endpoint_factory, deadline=thresholds.max_execution_time, **run_options,
                ), settings, extensions, finalize)
            result = run_scenario(
                scenario, settings, run_dir=run_dir, handler=handler,
                endpoint_factory=endpoint_factory, on_progress=self.on_progress,
                deadline=thresholds.max_execution_time, **run_options,
            )
        except KeyboardInterrupt as exc:  # the run's files stay as the interrupt left them: say where
            db_path, log_path = run_files(settings, run_dir)
            self.interrupted.append(InterruptedRun(scenario.name, db_path, log_path,
                                                   getattr(exc, "signal_name", "SIGINT"), time.monotonic() - began))
            raise
        result.verdicts = [verdict.as_dict() for verdict in judge(result)]
        return self._judged(result, settings, extensions, finalize)

    def _judged(self, result: RunResult, settings: Settings, extensions: Any, finalize: bool) -> RunResult:
        if finalize:
            self.finalize(result, settings, extensions)
        return result

    def finalize(self, result: RunResult, settings: Settings | None = None, extensions: Any = None) -> None:
        """The run is fully judged: keep or tidy its files, record it, tell the observers."""
        self.finish(result, keep=bool((settings or self.settings).db_path))
        if extensions is not None:
            extensions.observe(result)

    def finish(self, result: RunResult, *, keep: bool) -> None:
        """A judged result: a passing run on a temporary file leaves no file behind."""
        # keep_files: a disturbance (e.g. a fault that lost a job) wants the evidence kept
        result.extra["kept"] = keep or not result.passed or bool(result.extra.get("keep_files"))
        if not result.extra["kept"]:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(result.db_path + suffix)
        for callback in self.on_result:
            callback(result)
