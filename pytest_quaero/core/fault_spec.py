"""The faults SPEC: ``--quaero-faults=KIND[:KEY=VALUE,...];...``, parsed and checked against the settings.

Each fault is ``KIND[:KEY=VALUE,...]``, several separated by ``;``::

    kill-worker:after=25%        once 25% of the jobs are done, kill the worker that starts the
                                 next job, while that job is in flight (after=N counts jobs;
                                 at=DURATION triggers on time since the pool started instead)
    kill-producer:parent=1,after=5
                                 producer 1 dies inside the transaction of its 6th child, after
                                 committing 5; a supervisor restarts it, and the restarted
                                 producer must resume without creating anything twice
    restart-pool:after=50%       stop every worker (each finishes its job) and start a new pool

:mod:`pytest_quaero.core.fault_injectors` makes each kind real; :mod:`pytest_quaero.core.faults`
fires them during a run and records what happened.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_quaero.core.disturbance import split_spec
from pytest_quaero.core.fields import format_duration, parse_duration, parse_whole
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings

__all__ = ["FaultError", "FaultSpec", "check_faults", "parse_faults"]


_KINDS: dict[str, dict[str, Any]] = {
    "kill-worker": {"after": "25%", "at": None, "hold": 30.0},
    "kill-producer": {"parent": 1, "after": None},
    "restart-pool": {"after": "50%", "at": None},
}
_EXAMPLE = "kill-worker:after=25%;kill-producer:parent=1,after=5;restart-pool:after=50%"


class FaultError(ValueError):
    """A faults SPEC that cannot be used; the message names the part and what is allowed."""


@dataclass(frozen=True)
class FaultSpec:
    """One fault: its kind and parameters (``after`` as ``(number, is_percent)``, durations in seconds)."""

    kind: str
    params: dict[str, Any]
    text: str

    def after_jobs(self, total: int) -> int:
        amount, percent = self.params["after"]
        return min(total - 1, max(0, round(total * amount / 100))) if percent else int(amount)


def parse_faults(text: str, *, option: str = "--quaero-faults") -> list[FaultSpec]:
    """``'kill-worker:after=25%;restart-pool:at=2s'`` -> fault specs."""
    faults: list[FaultSpec] = []
    for part, kind, given in split_spec(text, _KINDS, option=option, noun="fault", example=_EXAMPLE,
                                        error=FaultError):
        where = f"{option}={text}: {part!r}"
        defaults = _KINDS[kind]
        if "at" in given and "after" in given:
            raise FaultError(f"{where}: give after= or at=, not both")
        raw: dict[str, Any] = {**defaults, **given}
        if "at" in given:
            raw["after"] = None  # a time trigger replaces the default progress trigger
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if value is None or (key == "hold" and key not in given):
                params[key] = value
                continue
            try:
                if key in ("at", "hold"):
                    params[key] = parse_duration(str(value))
                    if key == "hold" and params[key] <= 0:
                        raise ValueError(value)
                elif key == "after":
                    # [0-9], not \d: float() reads fullwidth digits too; a count of jobs is whole
                    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(%?)", str(value))
                    if match is None or (match[2] and float(match[1]) > 100) or (
                            not match[2] and "." in match[1]):
                        raise ValueError(value)
                    params[key] = (float(match[1]), bool(match[2]))
                else:  # parent
                    params[key] = parse_whole(str(value))
                    if params[key] < 1:
                        raise ValueError(value)
            except ValueError:
                allowed = {"at": "a duration such as 2s", "hold": "a duration > 0 such as 30s",
                           "after": "a number of jobs (10) or a percentage (25%)",
                           "parent": "a parent number >= 1"}[key]
                raise FaultError(f"{where}: invalid {key}={value!r}; allowed: {allowed}") from None
        faults.append(FaultSpec(kind, params, part))
    return faults


def check_faults(faults: list[FaultSpec], settings: Settings, *, children: int | None = None,
                 option: str = "--quaero-faults", scenarios: Sequence[Scenario] = ()) -> list[str]:
    """Reject faults the settings cannot survive, or that cannot happen in one of ``scenarios``
    (each with the time limit it runs with); return warnings for ones that will be slow."""
    warnings: list[str] = []
    for fault in faults:
        if fault.kind == "kill-worker":
            if settings.workers < 2 and not any(f.kind == "restart-pool" for f in faults):
                raise FaultError(f"{option}: {fault.text!r} needs at least 2 workers (--quaero-workers) so "
                                 "another worker can take over the killed one's job")
            if settings.visibility_timeout > 60:
                warnings.append(
                    f"{option}: {fault.text!r}: the killed job comes back only after the visibility timeout "
                    f"({settings.describe('visibility_timeout')}); set --quaero-visibility-timeout=5s or the run "
                    "waits that long")
        if fault.kind == "kill-producer" and children is not None and fault.params["after"] is not None:
            after = fault.params["after"]
            if not after[1] and after[0] >= children:
                raise FaultError(f"{option}: {fault.text!r}: after={after[0]:g} but a parent has only {children} "
                                 "children; the producer would finish before dying")
        for scenario in scenarios:
            reason = _cannot_happen(fault, scenario)
            if reason:
                raise FaultError(f"{option}: {fault.text!r} cannot happen in scenario {scenario.name!r}: {reason}")
    return warnings


def _cannot_happen(fault: FaultSpec, scenario: Scenario) -> str:
    """Why ``fault`` can never fire in ``scenario`` (``''`` if it can)."""
    params = fault.params
    if fault.kind == "kill-producer":
        if params["parent"] > scenario.parents:
            return (f"it has {scenario.parents} parents; allowed: parent=1..{scenario.parents} (or choose "
                    "scenarios with more parents)")
        after = params["after"]
        if after is not None and not after[1] and after[0] >= scenario.children:
            return (f"a parent has {scenario.children} children, so after={after[0]:g} is never reached; "
                    f"allowed: after=0..{scenario.children - 1} or a percentage")
        return ""
    after, at = params.get("after"), params.get("at")
    if after is not None and not after[1] and after[0] >= scenario.total_jobs:
        return (f"it has {scenario.total_jobs} jobs, so after={after[0]:g} is never reached; allowed: "
                f"after=0..{scenario.total_jobs - 1} or a percentage")
    if at is not None and at >= scenario.time_limit:
        return (f"it stops after {format_duration(scenario.time_limit)}, so at={format_duration(at)} is never "
                "reached; allowed: an at= below the time limit")
    return ""
