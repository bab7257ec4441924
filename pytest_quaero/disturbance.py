"""Disturbances: what a run starts on purpose beside its pool (contention loads, faults).

:func:`pytest_quaero.run.run_scenario` takes ``disturbances=[...]``. Each one is started
once the pool runs and before the producers create any job, stopped after the drain
(after the pool stopped, so a final checkpoint sees the quiet database), and then
records what it did into ``result.extra``. A disturbance never decides pass or fail;
the criteria (and the gate's own items) judge the result it recorded into.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .metrics import RunResult
    from .scenarios import Scenario
    from .settings import Settings

__all__ = ["Disturbance", "RunContext"]


@dataclass(frozen=True)
class RunContext:
    """What a disturbance may know about the run it disturbs."""

    scenario: Scenario
    settings: Settings
    db_path: str
    run_dir: str
    run_id: str
    #: the run's clock origin (``time.monotonic()``); timeline offsets are seconds since it
    t0: float
    #: the pool the run drains with (a :class:`~pytest_quaero.pool.WorkerPool` or a wrapper)
    pool: Any
    #: ``mark(phase, at=None, label=None)`` adds a labelled entry to the run's timeline
    mark: Callable[..., None]


class Disturbance(Protocol):
    """Started after the pool, stopped after the drain; must not raise from ``stop``/``record``.

    ``close`` releases what the disturbance holds even if the run never started it (the
    caller that made it calls it after the run, whatever happened; it must be idempotent).
    """

    def start(self, run: RunContext) -> None: ...

    def stop(self) -> None: ...

    def record(self, result: RunResult) -> None: ...

    def close(self) -> None: ...
