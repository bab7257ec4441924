"""Disturbances: what a run starts on purpose beside its pool (contention loads, faults).

:func:`pytest_quaero.core.run.run_scenario` takes ``disturbances=[...]``. Each one is started
once the pool runs and before the producers create any job, stopped after the drain
(after the pool stopped, so a final checkpoint sees the quiet database), and then
records what it did into ``result.extra``. A disturbance never decides pass or fail;
the criteria (and the gate's own items) judge the result it recorded into.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings

__all__ = ["Disturbance", "RunContext", "split_spec"]


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
    #: the pool the run drains with (a :class:`~pytest_quaero.core.pool.WorkerPool` or a wrapper)
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


def split_spec(
    text: str,
    kinds: Mapping[str, Any],
    *,
    option: str,
    noun: str,
    example: str,
    error: type[ValueError],
    settings_help: Callable[[str], str] | None = None,
) -> list[tuple[str, str, dict[str, str]]]:
    """``'kind:key=value,key=value;kind:...'`` -> ``[(part, kind, {key: raw value})]``.

    The grammar shared by ``--quaero-contention`` and ``--quaero-faults``: unknown kinds
    and keys are rejected here, naming the option, the part and what is allowed; each
    caller parses and checks its own values. ``kinds`` maps a kind to its known keys;
    ``_`` in a kind reads as ``-``.
    """
    parts: list[tuple[str, str, dict[str, str]]] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        where = f"{option}={text}: {part!r}"
        kind, _, rest = part.partition(":")
        kind = kind.strip().lower().replace("_", "-")
        if kind not in kinds:
            raise error(f"{where}: unknown {noun} {kind!r}; allowed: {', '.join(kinds)} (e.g. {example})")
        given: dict[str, str] = {}
        for item in (i.strip() for i in rest.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if not sep or key not in kinds[kind]:
                allowed = settings_help(kind) if settings_help else ", ".join(kinds[kind])
                raise error(f"{where}: unknown setting {item!r} for {kind}; allowed: {allowed}")
            given[key] = value.strip()
        parts.append((part, kind, given))
    if not parts:
        raise error(f"{option}={text!r}: name at least one {noun}, e.g. {example}")
    return parts
