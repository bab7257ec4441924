"""Named load scenarios: how many parents, how many children each, and their time limit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["BUILTIN", "Scenario", "parse_scenarios"]


@dataclass(frozen=True)
class Scenario:
    """A crawl-job tree to seed: ``parents`` parents with ``children`` child URLs each."""

    name: str
    parents: int
    children: int
    #: the template's execution-time limit for this load, in seconds
    time_limit: float = 300.0
    description: str = ""

    def __post_init__(self) -> None:
        if self.parents < 1 or self.children < 1:
            raise ValueError(f"scenario {self.name!r}: parents and children must be >= 1")

    @property
    def total_jobs(self) -> int:
        return self.parents * self.children

    @property
    def title(self) -> str:
        return f"{self.name.capitalize()} Load Test ({self.total_jobs} Jobs)"


BUILTIN: dict[str, Scenario] = {
    "light": Scenario("light", 5, 20, 300.0, "Light Load"),
    "medium": Scenario("medium", 10, 50, 600.0, "Medium Load"),
    "heavy": Scenario("heavy", 15, 100, 1200.0, "Heavy Load"),
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
