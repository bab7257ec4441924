"""Named load scenarios: how many parents, how many children each, and their time limit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_quaero.core.fields import (
    DURATION_HELP,
    MAX_DURATION_TEXT,
    MAX_SECONDS,
    SettingsError,
    format_duration,
    parse_duration,
    parse_whole,
)

if TYPE_CHECKING:  # annotations only
    from pytest_quaero.core.settings import Settings

__all__ = ["BUILTIN", "Scenario", "check_stagger", "parse_scenarios", "scenario_value", "shaped"]

_WHOLE_HELP = "a whole number >= 1"
_TIME_LIMIT_HELP = f"{DURATION_HELP} (> 0), at most {MAX_DURATION_TEXT}"


@dataclass(frozen=True)
class Scenario:
    """A crawl-job tree to seed: ``parents`` parents with ``children`` child URLs each.

    Checked when made (also by ``dataclasses.replace``), wherever it comes from: the
    built-ins, a ``pytest_quaero_scenarios`` hook, a marker.
    """

    name: str
    parents: int
    children: int
    #: the template's execution-time limit for this load, in seconds
    time_limit: float = 300.0
    description: str = ""
    #: settings this scenario is defined by, ``(name, value as written)`` pairs (see :func:`shaped`)
    shape: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"scenario name {self.name!r}: allowed: a non-empty string")
        for key in ("parents", "children"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"scenario {self.name!r}: {key}={value!r}; allowed: {_WHOLE_HELP}")
        limit = self.time_limit
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not 0 < limit <= MAX_SECONDS:
            raise ValueError(f"scenario {self.name!r}: time_limit={limit!r}; allowed: seconds as a number "
                             f"> 0, at most {MAX_SECONDS:.0f} ({MAX_DURATION_TEXT})")

    @property
    def total_jobs(self) -> int:
        return self.parents * self.children

    @property
    def title(self) -> str:
        return f"{self.name.capitalize()} Load Test ({self.total_jobs} Jobs)"


def scenario_value(key: str, value: Any, *, where: str) -> int | float:
    """A marker's ``parents=``/``children=`` (whole numbers) or ``time_limit=`` (a duration or seconds).

    Raises SettingsError naming ``where``, the key and the allowed form.
    """
    try:
        if key == "time_limit":
            if isinstance(value, str):
                seconds = parse_duration(value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                seconds = float(value)
            else:
                raise ValueError(value)
            if not 0 < seconds <= MAX_SECONDS:
                raise ValueError(value)
            return seconds
        number = parse_whole(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise ValueError(value)
        return number
    except (ValueError, OverflowError):
        allowed = _TIME_LIMIT_HELP if key == "time_limit" else _WHOLE_HELP
        raise SettingsError(f"{where}: invalid {key}={value!r}; allowed: {allowed}.") from None


def check_stagger(settings: Settings, scenario: Scenario) -> None:
    """The last worker must start before the scenario's time limit, or the stagger is never exercised.

    Worker k starts k x stagger after the pool: with the last one due past the time limit the
    run ends before the pool it was meant to stagger even exists. Raises SettingsError naming
    both settings and where each came from.
    """
    last = settings.stagger * (settings.workers - 1)
    if settings.workers < 2 or last < scenario.time_limit:
        return
    sources = settings.sources
    limit = format_duration(scenario.time_limit)
    raise SettingsError(
        f"--quaero-stagger={settings.describe('stagger')} ({sources.get('stagger', 'default')}) with "
        f"--quaero-workers={settings.workers} ({sources.get('workers', 'default')}): the last worker would "
        f"start {format_duration(last)} after the pool, but scenario {scenario.name!r} stops after {limit}; "
        f"allowed: stagger x (workers - 1) below the time limit, here a stagger under "
        f"{format_duration(scenario.time_limit / (settings.workers - 1))}."
    )


#: where a per-test setting comes from (a marker's keyword, a quaero_run() argument): it wins over a shape
_PER_TEST_SOURCES = ("@pytest.mark.", "quaero_run()")


def shaped(scenario: Scenario, settings: Settings) -> Settings:
    """``settings`` with the scenario's own :attr:`~Scenario.shape` applied.

    A shape is what the scenario *is* (stress: 8 workers, no stagger, no work), so it wins over
    session-wide settings (command line, environment, config files), which are set for the
    template's loads; a marker or ``quaero_run()`` keyword for this one test still wins over it.
    """
    changes = {name: value for name, value in scenario.shape
               if not str(settings.sources.get(name, "")).startswith(_PER_TEST_SOURCES)}
    return settings.replace(source=f"scenario {scenario.name!r}", **changes) if changes else settings


BUILTIN: dict[str, Scenario] = {
    "light": Scenario("light", 5, 20, 300.0, "Light Load"),
    "medium": Scenario("medium", 10, 50, 600.0, "Medium Load"),
    "heavy": Scenario("heavy", 15, 100, 1200.0, "Heavy Load"),
    # Races that two staggered workers with 5-20 ms jobs almost never hit (lost counter updates, a
    # deferred read-then-write claim, a short busy_timeout): every worker at once, no work between
    # claims, and few enough parents that many children of one parent finish at the same moment.
    "stress": Scenario("stress", 10, 100, 120.0, "Stress (8 workers, no stagger, zero work)", shape=(
        ("workers", "8"), ("stagger", "0ms"), ("job_time", "0ms"), ("poll_interval", "20ms"))),
    # The small shape --quaero-explore runs schedule after schedule: every child shares one parent (its
    # counters race), no work between statements, short polls and retries (on the schedule's clock).
    "explore": Scenario("explore", 1, 4, 60.0, "Explore (2 workers, 1 parent x 4 children, zero work)", shape=(
        ("workers", "2"), ("stagger", "0ms"), ("job_time", "0ms"), ("poll_interval", "10ms"),
        ("retry_backoff", "1ms"), ("visibility_timeout", "5s"))),
}


def parse_scenarios(
    text: str, known: Mapping[str, Scenario] = BUILTIN, *, where: str = "--quaero-scenario"
) -> list[Scenario]:
    """``'light,medium'`` or ``'all'`` -> scenarios in the order given, each once."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"{where}={text!r}: name at least one scenario; allowed: {', '.join(known)} or all.")
    chosen: list[Scenario] = []
    for name in names:
        group = list(known.values()) if name == "all" else [known.get(name)]
        if group == [None]:
            raise ValueError(
                f"{where}={text!r}: unknown scenario {name!r}; allowed: {', '.join(known)}, "
                "a comma-separated list of them, or all."
            )
        for scenario in group:
            if scenario is not None and scenario not in chosen:
                chosen.append(scenario)
    return chosen
