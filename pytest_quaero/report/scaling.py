"""Which runs the template's verdict and its scaling analysis may compare, and the scaling figures.

Two rules keep cross-run figures honest:

* A run a test made with its own settings or its own tree (``quaero_run(workers=4)``,
  ``@pytest.mark.quaero_scenario(parents=3, children=10)``) is that test's business: its
  test judges it, and the template's verdict and scaling leave it out (:func:`own_settings`).
* Scaling compares throughput only between runs that used the session's settings, so a
  scenario with a shape of its own (stress: 8 workers, no stagger, no work) is listed but
  not compared. The base is light when it ran, and rows go by size.

Pure functions over :class:`RunResult` objects; :mod:`pytest_quaero.report.figures` calls them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.settings import Settings
from pytest_quaero.report.wording import duration, not_measured, not_run


class Run(Protocol):
    """A run under its label in the report (:class:`pytest_quaero.report.figures.Run`)."""

    @property
    def label(self) -> str: ...

    @property
    def result(self) -> RunResult: ...

__all__ = ["FIXED_COST_NOTE_SHARE", "LINEAR_MIN_FACTOR", "Scaling", "differences", "measure_scaling", "own_settings"]

#: a larger load scales "linearly" when its throughput is at least this share of the base load's
LINEAR_MIN_FACTOR = 0.8
#: the fixed start-up cost is explained when it is at least this share of the base run's time
FIXED_COST_NOTE_SHARE = 0.10
#: the scenario every factor is measured against, when it ran
BASE_SCENARIO = "light"
_TEMPLATE = ("light", "medium", "heavy")


def _described(recorded: dict[str, Any], name: str) -> str:
    """A recorded setting as a person writes it (``500ms``), falling back to its raw value."""
    value: Any = recorded.get(name)
    changes: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value}
    try:
        return Settings(**changes).describe(name)
    except (TypeError, ValueError):
        return str(value)


def differences(recorded: dict[str, Any], settings: Settings) -> list[str]:
    """``workers 8 (session 2)`` for every recorded setting that differs from the session's (db_path aside)."""
    session = settings.as_dict()
    return [f"{name} {_described(recorded, name)} (session {settings.describe(name)})"
            for name, value in recorded.items() if name in session and name != "db_path" and session[name] != value]


def own_settings(result: RunResult, settings: Settings) -> str | None:
    """Why ``result`` is a test's own run outside the template's verdict, or None when it belongs in it.

    Only runs a test made (``quaero_run``, so ``extra["origin"]`` names the test) qualify, and
    only when their settings or their tree differ from what the session would have run.
    """
    origin = result.extra.get("origin")
    if not origin:
        return None
    reasons = differences(result.settings, settings)
    builtin = BUILTIN.get(result.scenario)
    if builtin is None or (builtin.parents, builtin.children) != (result.parents, result.children_per_parent):
        reasons.insert(0, f"its own tree of {result.parents} x {result.children_per_parent} jobs")
    if not reasons:
        return None
    return f"{origin} ran it with " + "; ".join(reasons)


@dataclass
class Scaling:
    """Throughput against load size, the rule applied, and its verdict (None: not measurable)."""

    rows: list[str]
    linear: bool | None
    verdict_text: str
    characteristic: str
    largest: int
    rule: str
    #: what the factor means when the base run is short (empty when its fixed cost is small)
    note: str = ""
    #: label of the base run ("" when none)
    base: str = ""


def stagger_cost(result: RunResult) -> float:
    """Seconds before the run's last worker starts (worker k starts k x stagger after the pool)."""
    workers = int(result.settings.get("workers") or 1)
    return float(result.settings.get("stagger") or 0.0) * max(0, workers - 1)


def _fixed_cost_note(base: Run, largest: Run) -> str:
    """What a factor means when the base run is short enough for its fixed start-up cost to weigh."""
    r, big = base.result, largest.result
    cost = stagger_cost(r)
    poll = float(r.settings.get("poll_interval") or 0.0)
    if r.execution_time <= 0 or (cost + poll) / r.execution_time < FIXED_COST_NOTE_SHARE:
        return ""
    share = min(100.0, 100.0 * cost / r.execution_time)
    big_share = min(100.0, 100.0 * cost / big.execution_time) if big.execution_time > 0 else 0.0
    return (f"Reading the factors: {duration(cost)} of {base.label}'s {duration(r.execution_time)} ({share:.0f}%) "
            f"passed before its last worker started (stagger {_described(r.settings, 'stagger')}), against "
            f"{big_share:.0f}% of {largest.label}'s {duration(big.execution_time)}; and a worker that finds the queue "
            f"empty waits up to {_described(r.settings, 'poll_interval')} (poll interval) before it looks again. "
            "Neither grows with the load, so a factor above 1 mostly says those fixed costs are spread over more "
            f"jobs, not that the queue got faster; a factor below {LINEAR_MIN_FACTOR} still means it slows as it "
            "grows.")


def measure_scaling(runs: Sequence[Run], settings: Settings) -> Scaling:
    """Throughput against load size: factor = throughput / the base run's throughput.

    ``runs`` are the verdict's runs; those with settings of their own are listed, not compared.
    """
    compared = [run for run in runs if not differences(run.result.settings, settings)]
    apart = [run for run in runs if run not in compared]
    compared.sort(key=lambda run: (run.result.total_jobs, run.label))
    base = next((run for run in compared if run.result.scenario == BASE_SCENARIO), None) or next(iter(compared), None)
    rule = (f"linear when every larger load's throughput is at least {LINEAR_MIN_FACTOR:.0%} of "
            f"{base.label if base else BASE_SCENARIO}'s (scaling factor >= {LINEAR_MIN_FACTOR}), i.e. total time "
            "grows in proportion to the jobs; only runs with the session's settings are compared")
    ran = {run.result.scenario for run in runs}
    rows: list[tuple[int, str]] = [(BUILTIN[name].total_jobs, f"  {f'{BUILTIN[name].total_jobs} jobs':<10}→ "
                                    f"{not_run(name)}") for name in _TEMPLATE if name not in ran]
    for run in compared:
        r = run.result
        line = f"  {f'{r.total_jobs} jobs':<10}→ {r.throughput:.1f} jobs/sec ({run.label}"
        if base is not None and run is base:
            line += ", the base of the scaling factors)"
        elif base is not None and base.result.throughput > 0:
            line += f"; SCALING FACTOR: {r.throughput / base.result.throughput:.2f} vs {base.label})"
        else:
            line += ")"
        rows.append((r.total_jobs, line))
    rows.sort(key=lambda row: row[0])
    lines = [line for _, line in rows]
    lines += [f"  {f'{run.result.total_jobs} jobs':<10}→ {run.result.throughput:.1f} jobs/sec ({run.label}; not "
              f"compared: ran with its own settings: {', '.join(differences(run.result.settings, settings))})"
              for run in apart]
    larger = [run for run in compared if base is not None and run.result.total_jobs > base.result.total_jobs]
    largest = max((run.result.total_jobs for run in compared), default=0)
    if base is None or not larger or base.result.throughput <= 0:
        why = ("needs at least two scenarios of different size run with the session's settings; run with "
               "--quaero-scenario=all" if base is None or not larger else f"{base.label} completed no job")
        return Scaling(lines, None, not_measured(why), not_measured(why), largest, rule,
                       base=base.label if base else "")
    factors = [(run.result.throughput / base.result.throughput, run.label) for run in larger]
    worst = min(factors)
    linear = worst[0] >= LINEAR_MIN_FACTOR
    verdict = (f"{'YES' if linear else 'NO'} (lowest scaling factor {worst[0]:.2f}, {worst[1]}, against "
               f"{LINEAR_MIN_FACTOR})")
    characteristic = (f"System throughput scales linearly with job count: {verdict}" if linear else
                      f"System throughput does NOT scale linearly with job count: {verdict}")
    note = _fixed_cost_note(base, max(larger, key=lambda run: run.result.total_jobs))
    return Scaling(lines, linear, verdict, characteristic, largest, rule, note, base.label)
