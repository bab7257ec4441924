"""Who runs next: the exploration strategies, their specs (``random:500``) and replay tokens.

At every scheduling point the scheduler asks its strategy to pick one of the enabled
workers (sorted by name, so the same state gives the same list). A strategy is fully
determined by its replay token, so ``--quaero-replay=TOKEN`` takes the same decisions:

* ``random.SEED``: a uniform pick at every point, seeded;
* ``pct.SEED.DEPTH.STEPS``: probabilistic concurrency testing (Burckhardt et al., 2010):
  random distinct priorities, the highest enabled one runs, and at DEPTH-1 random points
  out of about STEPS (points where more than one worker can run) the running worker drops
  to the lowest priority; it finds a bug of depth d with probability at least 1/(n k^(d-1))
  per schedule;
* ``sys.STEP-WORKER...``: the systematic search's schedule: run the current worker on as
  long as it can (lowest-named worker when it cannot), except at each STEP, where WORKER
  (its index in the sorted names) is forced to run; ``sys.0`` has no forced switch.
  The search (:class:`SystematicSearch`) enumerates every schedule with up to ``bound``
  forced switches, the one-switch schedules first.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from pytest_quaero.core.explore.spec import parse_explore_text, replay_text

__all__ = [
    "ExploreSpec",
    "PCTStrategy",
    "RandomStrategy",
    "Strategy",
    "SystematicSearch",
    "SystematicStrategy",
    "parse_explore",
    "parse_token",
]


class Strategy:
    """Picks the next worker; ``decisions`` keeps what each point offered and what was chosen."""

    def __init__(self) -> None:
        self.decisions: list[tuple[tuple[str, ...], str]] = []

    @property
    def token(self) -> str:
        raise NotImplementedError

    def pick(self, step: int, enabled: Sequence[str], current: str | None) -> str:
        raise NotImplementedError

    def choose(self, enabled: Sequence[str], current: str | None) -> str:
        """One decision: ``enabled`` is sorted, ``current`` the worker at the point (if it may go on)."""
        chosen = enabled[0] if len(enabled) == 1 else self.pick(len(self.decisions), enabled, current)
        self.decisions.append((tuple(enabled), chosen))
        return chosen


class RandomStrategy(Strategy):
    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self._rng = random.Random(seed)

    @property
    def token(self) -> str:
        return f"random.{self.seed}"

    def pick(self, step: int, enabled: Sequence[str], current: str | None) -> str:
        return enabled[self._rng.randrange(len(enabled))]


class PCTStrategy(Strategy):
    def __init__(self, seed: int, depth: int, steps: int) -> None:
        super().__init__()
        self.seed, self.depth, self.steps = seed, depth, max(1, steps)
        self._rng = random.Random(seed)
        self._priority: dict[str, float] = {}
        #: points so far where more than one worker could run (what ``steps`` estimates)
        self.choice_points = 0
        points = min(self.depth - 1, self.steps)
        self._changes = {step: index for index, step in enumerate(sorted(self._rng.sample(range(self.steps), points)))}

    @property
    def token(self) -> str:
        return f"pct.{self.seed}.{self.depth}.{self.steps}"

    def _of(self, worker: str) -> float:
        found = self._priority.get(worker)
        if found is None:
            # a fresh worker gets a random priority above every change point's
            found = self._priority[worker] = self.depth + self._rng.random()
        return found

    def pick(self, step: int, enabled: Sequence[str], current: str | None) -> str:
        # PCT's steps are the points that offer a choice: a change point where one worker alone can run
        # would be spent on nothing
        self.choice_points += 1
        change = self._changes.get(self.choice_points - 1)
        if change is not None:
            runner = current if current is not None and current in enabled else max(enabled, key=self._of)
            self._priority[runner] = change / max(1, self.depth)  # below every initial priority
        return max(enabled, key=self._of)


class SystematicStrategy(Strategy):
    """Non-preemptive, except at the forced switches ``{step: index into enabled}``."""

    def __init__(self, switches: dict[int, int] | None = None) -> None:
        super().__init__()
        self.switches = dict(switches or {})

    @property
    def token(self) -> str:
        if not self.switches:
            return "sys.0"
        return "sys." + ".".join(f"{step}-{index}" for step, index in sorted(self.switches.items()))

    def pick(self, step: int, enabled: Sequence[str], current: str | None) -> str:
        forced = self.switches.get(step)
        if forced is not None and forced < len(enabled):
            return enabled[forced]
        return current if current is not None and current in enabled else enabled[0]


@dataclass
class SystematicSearch:
    """Every schedule with up to ``bound`` forced switches, breadth first (fewest switches first).

    Each schedule that ran tells the search what its points offered (:meth:`ran`); the
    schedules with one more switch after its last forced one are queued from that.
    """

    bound: int = 1
    _queue: deque[dict[int, int]] = field(default_factory=lambda: deque([{}]))

    def __iter__(self) -> Iterator[SystematicStrategy]:
        while self._queue:
            yield SystematicStrategy(self._queue.popleft())

    def ran(self, strategy: SystematicStrategy) -> None:
        if len(strategy.switches) >= self.bound:
            return
        after = max(strategy.switches, default=-1)
        for step, (enabled, chosen) in enumerate(strategy.decisions):
            if step <= after or len(enabled) < 2:
                continue
            for index, worker in enumerate(enabled):
                if worker != chosen:
                    self._queue.append({**strategy.switches, step: index})


@dataclass(frozen=True)
class ExploreSpec:
    """``--quaero-explore``: a strategy, how many schedules, and its one parameter."""

    strategy: str
    schedules: int
    #: PCT's depth, or the systematic search's bound on forced switches
    parameter: int

    def __str__(self) -> str:
        return f"{self.strategy}:{self.schedules}:{self.parameter}"


def parse_explore(value: object) -> ExploreSpec:
    """``random:500``, ``pct:500:3``, ``systematic:100:1``; ValueError for anything else."""
    return ExploreSpec(*parse_explore_text(value))


def parse_token(value: object) -> Strategy:
    """The strategy a replay token names; ValueError for anything else."""
    text = replay_text(value)
    parts = text.split(".")
    if parts[0] == "random":
        return RandomStrategy(int(parts[1]))
    if parts[0] == "pct":
        return PCTStrategy(int(parts[1]), max(1, int(parts[2])), max(1, int(parts[3])))
    if text == "sys.0":
        return SystematicStrategy()
    return SystematicStrategy({int(step): int(index) for step, index in (part.split("-") for part in parts[1:])})
