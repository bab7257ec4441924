"""Run a scenario under N explored schedules, judging each one; or replay one schedule exactly.

Each schedule is a whole run (:func:`~pytest_quaero.core.run.run_scenario`): a fresh
database, the same queue, store, handler and hooks as any run, the producers and the
workers as real threads, with a :class:`~pytest_quaero.core.explore.scheduler.Scheduler`
deciding the order of their statements. After each schedule the caller's ``judge`` (the
criteria, plus any a hook adds) rules on its result; the first schedule that fails ends
the exploration, and each failed verdict's detail then carries the replay flag, the
trace hash and the last steps of the trace.

Timing criteria (throughput, worker staggering, write-lock hold) are not judged on an
explored schedule: the schedule, not the machine, decides who waits, and a thread parked
by it holds its lock for as long as the others run.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_quaero.core import observed
from pytest_quaero.core.criteria import Verdict
from pytest_quaero.core.errors import RunError
from pytest_quaero.core.explore.pool import PROCESS_MODE_ERROR, explored_pool
from pytest_quaero.core.explore.scheduler import WATCHDOG_SECONDS, ExplorationError, Scheduler
from pytest_quaero.core.explore.strategies import (
    PCTStrategy,
    RandomStrategy,
    Strategy,
    SystematicSearch,
    parse_explore,
    parse_token,
)
from pytest_quaero.core.explore.trace import TAIL_STEPS
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import Scenario, shaped
from pytest_quaero.core.settings import Settings

__all__ = ["NOT_JUDGED", "Exploration", "Schedule", "explore", "explore_run", "participants"]

#: criteria an explored schedule cannot be judged by: they measure the machine's timing
NOT_JUDGED = ("throughput", "worker_staggering", "write_lock_hold")
_NOT_JUDGED_TEXT = "not judged (explored)"
_NOT_JUDGED_WHY = "a timing criterion: on an explored schedule the schedule, not the clock, decides who waits"
#: the first PCT schedule's guess of a schedule's length in decisions; later ones use the longest seen
_PCT_FIRST_STEPS = 100

Judge = Callable[[RunResult], list[Verdict]]


@dataclass(frozen=True)
class Schedule:
    """One explored schedule: its replay token, trace hash, length and the criteria it failed."""

    number: int
    token: str
    trace_hash: str
    decisions: int
    statements: int
    failed: tuple[str, ...]
    tail: tuple[str, ...]
    ended: str = ""


@dataclass
class Exploration:
    """What N schedules found: the failing schedule (if any) and the result judged last."""

    strategy: str
    planned: int
    schedules: list[Schedule] = field(default_factory=list)
    result: RunResult | None = None
    seconds: float = 0.0

    @property
    def failing(self) -> Schedule | None:
        return next((s for s in self.schedules if s.failed), None)

    def as_dict(self) -> dict[str, Any]:
        failing = self.failing
        ran = len(self.schedules)
        return {
            "strategy": self.strategy, "planned": self.planned, "schedules": ran,
            "seconds": round(self.seconds, 3),
            "schedules_per_second": round(ran / self.seconds, 2) if self.seconds > 0 else None,
            "statements": sum(s.statements for s in self.schedules),
            "failing": dataclasses.asdict(failing) if failing is not None else None,
            "last": dataclasses.asdict(self.schedules[-1]) if self.schedules else None,
        }


def participants(scenario: Scenario, settings: Settings) -> dict[str, str]:
    """The threads a schedule explores (the run's producers and workers), with their names in the trace."""
    names = {f"quaero-producer-{p}": f"producer-{p}" for p in range(1, scenario.parents + 1)}
    names.update({f"quaero-worker-{i}": f"worker-{i}" for i in range(1, settings.workers + 1)})
    return names


def check_explorable(settings: Settings) -> None:
    """RunError unless the run's workers are threads of this process on SQLite (the scheduler's reach)."""
    if settings.worker_mode == "process" or settings.worker_command:
        raise RunError(PROCESS_MODE_ERROR + ".")
    if getattr(settings, "backend", "sqlite") != "sqlite":
        raise RunError("--quaero-explore and --quaero-replay need the SQLite backend: the scheduling points are "
                       "the statements of sqlite3 connections.")


def _strategies(spec: str, seed: int) -> Iterator[Strategy]:
    """The strategy of each schedule ``spec`` asks for, in order (a systematic search adapts as it runs)."""
    parsed = parse_explore(spec)
    if parsed.strategy == "systematic":
        search = SystematicSearch(parsed.parameter)
        for count, strategy in enumerate(search):
            if count >= parsed.schedules:
                return
            yield strategy
            search.ran(strategy)
        return
    steps = _PCT_FIRST_STEPS
    for number in range(parsed.schedules):
        schedule_seed = (seed + number) % 2**63
        if parsed.strategy == "random":
            yield RandomStrategy(schedule_seed)
        else:
            pct = PCTStrategy(schedule_seed, parsed.parameter, steps)
            yield pct
            steps = max(steps if number else 1, pct.choice_points)


def explore(
    scenario: Scenario,
    settings: Settings,
    *,
    run_dir: str | os.PathLike[str],
    judge: Judge,
    spec: str | None = None,
    replay: str | None = None,
    seed: int | None = None,
    watchdog: float = WATCHDOG_SECONDS,
    keep: bool = False,
    on_schedule: Callable[[Schedule], None] | None = None,
    **run_options: Any,
) -> Exploration:
    """Run ``scenario`` under the schedules ``spec`` (``random:500``) names, or the one ``replay`` names.

    Stops at the first schedule ``judge`` fails. ``seed`` is the first random/PCT schedule's
    (default: a fresh one, so each exploration tries new schedules; each failure's token
    replays it). ``run_options`` go to :func:`~pytest_quaero.core.run.run_scenario`
    (``handler``, ``endpoint_factory``, ``prepare``...). Raises ExplorationError when the
    watchdog stops a schedule, RunError in process mode.
    """
    settings = shaped(scenario, settings)
    check_explorable(settings)
    # the schedule decides when each worker starts: a stagger measured on the machine's clock would not replay
    settings = dataclasses.replace(settings, stagger=0.0)
    if replay is not None:
        strategies: Iterator[Strategy] = iter([parse_token(replay)])
        label, planned = f"replay {replay}", 1
    else:
        assert spec is not None, "explore() needs a spec or a replay token"
        label, planned = spec, parse_explore(spec).schedules
        strategies = _strategies(spec, secrets.randbits(62) if seed is None else seed)
    exploration = Exploration(label, planned)
    began = time.monotonic()
    base = Path(run_dir)
    for number, strategy in enumerate(strategies, 1):
        schedule_dir = base / f"schedule-{number}"
        scheduler = Scheduler(strategy, list(participants(scenario, settings)),
                              displays=participants(scenario, settings), watchdog=watchdog,
                              visibility_timeout=settings.visibility_timeout)
        result = _run_one(scenario, settings, scheduler, schedule_dir, run_options)
        verdicts = [_neutral(v) if v.criterion in NOT_JUDGED else v for v in judge(result)]
        failed = tuple(v.criterion for v in verdicts if not v.passed)
        schedule = Schedule(number, strategy.token, scheduler.trace.hash, len(strategy.decisions),
                            scheduler.statements, failed, tuple(scheduler.trace.tail(TAIL_STEPS)), scheduler.ended)
        exploration.schedules.append(schedule)
        if failed:
            verdicts = [_annotate(v, schedule, exploration, len(scheduler.trace.steps)) if not v.passed else v
                        for v in verdicts]
        result.verdicts = [v.as_dict() for v in verdicts]
        exploration.result = result
        if on_schedule is not None:
            on_schedule(schedule)
        if failed:
            break
        if not keep and not settings.db_path:
            shutil.rmtree(schedule_dir, ignore_errors=True)
    exploration.seconds = time.monotonic() - began
    if exploration.result is not None:
        exploration.result.extra["exploration"] = exploration.as_dict()
    return exploration


def _run_one(scenario: Scenario, settings: Settings, scheduler: Scheduler, run_dir: Path,
             run_options: dict[str, Any]) -> RunResult:
    if observed.SCHEDULER is not None:
        raise RunError("an exploration is already running in this process; explorations run one at a time")
    observed.SCHEDULER = scheduler
    try:
        result = run_scenario(scenario, settings, run_dir=run_dir, pool_factory=explored_pool(scheduler),
                              sample_interval=0.02, **run_options)
    finally:
        scheduler.release()
        observed.SCHEDULER = None
    if scheduler.failure is not None:
        raise ExplorationError(f"explored schedule {scheduler.strategy.token}: {scheduler.failure}")
    return result


def _neutral(verdict: Verdict) -> Verdict:
    return dataclasses.replace(verdict, measured=_NOT_JUDGED_TEXT, passed=True, value=None, detail=_NOT_JUDGED_WHY)


def _annotate(verdict: Verdict, schedule: Schedule, exploration: Exploration, steps: int) -> Verdict:
    """The failed verdict, its detail ending with how to replay the schedule and what it did last."""
    shown = "\n".join(f"    {line}" for line in schedule.tail)
    found = (f"found by exploration ({exploration.strategy}) on schedule {schedule.number}; replay with "
             f"--quaero-replay={schedule.token} (trace hash {schedule.trace_hash}); the last "
             f"{len(schedule.tail)} of {steps} steps:\n{shown}")
    return dataclasses.replace(verdict, detail=f"{verdict.detail}; {found}" if verdict.detail else found)


def explore_run(scenario: Scenario, settings: Settings, *, run_dir: str | os.PathLike[str], judge: Judge,
                **run_options: Any) -> RunResult:
    """The harness's entry: ``settings.replay`` (wins) or ``settings.explore``; the result judged last.

    An explicit ``--quaero-seed`` makes the schedules an exploration tries the same from run to
    run; without it each exploration starts from a fresh seed (every failure's token replays it).
    """
    if "pool_factory" in run_options:
        raise RunError("--quaero-explore runs the built-in thread pool (its stop and poll waits are scheduling "
                       "points); it cannot run a pool a hook or a fault replaces")
    seed = settings.seed if settings.sources.get("seed", "default") != "default" else None
    exploration = explore(scenario, settings, run_dir=run_dir, judge=judge, spec=settings.explore,
                          replay=settings.replay, seed=seed, **run_options)
    assert exploration.result is not None  # at least one schedule ran
    return exploration.result
