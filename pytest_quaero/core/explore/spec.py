"""How ``--quaero-explore`` and ``--quaero-replay`` are written, checked where every setting is.

Standard library only: :mod:`pytest_quaero.core.fields` reads this at every pytest start-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "EXPLORE_ALLOWED",
    "REPLAY_ALLOWED",
    "STRATEGIES",
    "explore_text",
    "explore_usage_error",
    "parse_explore_text",
    "replay_text",
]

STRATEGIES = ("random", "pct", "systematic")
EXPLORE_ALLOWED = ("STRATEGY:N, N schedules >= 1, with STRATEGY random, pct or systematic: random:500, pct:500 "
                   "or pct:500:DEPTH (DEPTH 1..64, default 3), systematic:500 or systematic:500:BOUND (forced "
                   "switches per schedule, 1..64, default 1)")
REPLAY_ALLOWED = ("a replay token as a failure printed it: random.SEED, pct.SEED.DEPTH.STEPS, sys.0 or "
                  "sys.STEP-WORKER[.STEP-WORKER...]")
_MAX_SCHEDULES = 10_000_000
_TOKEN = re.compile(r"random\.[0-9]{1,20}|pct\.[0-9]{1,20}\.[0-9]{1,2}\.[0-9]{1,7}"
                    r"|sys\.0|sys(?:\.[0-9]{1,7}-[0-9]{1,3})+")


def parse_explore_text(value: Any) -> tuple[str, int, int]:
    """``random:500`` -> ``('random', 500, 0)``, ``pct:500`` -> ``('pct', 500, 3)``; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(value)
    parts = value.strip().lower().split(":")
    strategy = parts[0]
    if strategy not in STRATEGIES or not 2 <= len(parts) <= (2 if strategy == "random" else 3):
        raise ValueError(value)
    if not all(re.fullmatch(r"[0-9]{1,9}", part) for part in parts[1:]):
        raise ValueError(value)
    schedules = int(parts[1])
    parameter = int(parts[2]) if len(parts) == 3 else {"random": 0, "pct": 3, "systematic": 1}[strategy]
    if not 1 <= schedules <= _MAX_SCHEDULES or (strategy != "random" and not 1 <= parameter <= 64):
        raise ValueError(value)
    return strategy, schedules, parameter


def explore_text(value: Any) -> str:
    """The setting's value, checked: ``random:500`` (lower case, no spaces)."""
    strategy, schedules, parameter = parse_explore_text(value)
    return f"{strategy}:{schedules}" + (f":{parameter}" if strategy != "random" else "")


def replay_text(value: Any) -> str:
    """A replay token, checked and in lower case."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value.strip().lower()):
        raise ValueError(value)
    return value.strip().lower()


def explore_usage_error(values: Mapping[str, Any], sources: Mapping[str, str]) -> str | None:
    """Why exploration cannot run with these settings (it needs thread workers on SQLite), or None."""
    wanted = "explore" if values.get("explore") else "replay" if values.get("replay") else None
    if wanted is None:
        return None
    flag = f"--quaero-{wanted}={values[wanted]} ({sources.get(wanted, 'default')})"
    if values.get("worker_mode") == "process" or values.get("worker_command"):
        other = ("--quaero-worker-mode=process" if values.get("worker_mode") == "process"
                 else "--quaero-worker-command")
        source = sources.get("worker_mode" if values.get("worker_mode") == "process" else "worker_command")
        return (f"{flag} with {other} ({source}): exploration needs thread workers. Its scheduler passes one "
                "token between the threads of this process at every statement; worker processes would have to "
                "ask it over a pipe at each statement, which is not built. Drop one of the two.")
    if values.get("backend", "sqlite") != "sqlite":
        return (f"{flag} with --quaero-backend={values['backend']} ({sources.get('backend')}): exploration needs "
                "the SQLite backend (its scheduling points are the statements of sqlite3 connections).")
    return None
