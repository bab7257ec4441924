"""The trace of one explored schedule: each step's worker, statement, parameters and result.

A step is written as one line of text the moment it happens. Values that differ from
one run of the same schedule to the next without changing what the schedule does are
written as stable names: the run's random id (``3fa2c1d0-child-1-2`` is ``RUN-child-1-2``),
goqite's random message ids (``m_9f...`` is ``m1``, ``m2`` in order of first appearance)
and wall-clock seconds a job body carries (``"created_at":1764773400.12`` is
``"created_at":T``). The trace's hash is over those lines, so a replay that takes the
same decisions and sees the same data has the same hash.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TAIL_STEPS", "Trace", "statement_text"]

#: how many of the last steps a failure shows
TAIL_STEPS = 40

#: the run's random id (before ``-parent-``/``-child-``), goqite's message ids, and seconds since 1970 (ten
#: digits and a fraction: time.time() in a body or parameter), in one pass
_RANDOM = re.compile(r"\b(?:[0-9a-f]{8}(?=-(?:parent|child)-)|m_[0-9a-f]{32}\b|1[0-9]{9}\.[0-9]+\b)")
_SPACES = re.compile(r"\s+")
_STATEMENTS: dict[str, str] = {}


def statement_text(sql: str, limit: int = 96) -> str:
    """One line of SQL, shortened to ``limit`` characters (cached: a run repeats a few statements)."""
    text = _STATEMENTS.get(sql)
    if text is None:
        text = _SPACES.sub(" ", sql).strip()
        text = text if len(text) <= limit else text[: limit - 3] + "..."
        if len(_STATEMENTS) < 4096:  # SQL built per call must not grow this forever
            _STATEMENTS[sql] = text
    return text


@dataclass
class Trace:
    """The steps of one schedule, as stable text, and their hash."""

    steps: list[str] = field(default_factory=list)
    _aliases: dict[str, str] = field(default_factory=dict, repr=False)
    _digest: Any = field(default_factory=hashlib.sha256, repr=False)

    def stable(self, text: str) -> str:
        """``text`` with the run's random ids and wall-clock seconds replaced by stable names."""
        return _RANDOM.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        found = match.group(0)
        if found.startswith("m_"):
            alias = self._aliases.get(found)
            if alias is None:
                alias = self._aliases[found] = f"m{len(self._aliases) + 1}"
            return alias
        return "T" if "." in found else "RUN"

    def add(self, worker: str, what: str, parameters: Any = None, result: str = "") -> None:
        """Record one step: ``worker``, the statement (or event), its parameters and what it returned."""
        line = f"{len(self.steps) + 1:>4} {worker}: {self.stable(what)}"
        if parameters is not None and parameters != ():
            line += f" {_params(parameters, self.stable)}"
        if result:
            line += f" -> {result if result.startswith('ok') else self.stable(result)}"
        self.steps.append(line)
        self._digest.update(line.encode("utf-8", "backslashreplace") + b"\n")

    @property
    def hash(self) -> str:
        """16 hex digits identifying the whole trace."""
        return str(self._digest.hexdigest())[:16]

    def tail(self, count: int = TAIL_STEPS) -> list[str]:
        return self.steps[-count:]


def _params(parameters: Any, stable: Callable[[str], str]) -> str:
    if isinstance(parameters, dict):
        return "{" + ", ".join(f"{k}: {_value(v, stable)}" for k, v in parameters.items()) + "}"
    if isinstance(parameters, (list, tuple)):
        return "(" + ", ".join(_value(v, stable) for v in parameters) + ")"
    if isinstance(parameters, Iterable) and not isinstance(parameters, (str, bytes)):
        return "(many)"  # executemany's iterator: reading it here would consume it
    return _value(parameters, stable)


def _value(value: Any, stable: Callable[[str], str], limit: int = 80) -> str:
    """One parameter, its random parts made stable before it is shortened (a cut id would not be)."""
    if isinstance(value, int) or value is None:
        return str(value)
    if isinstance(value, float):
        return "T" if 1e9 <= value < 1e10 else repr(value)  # seconds since 1970: the machine's clock
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(raw)} bytes>"
    text = stable(repr(value) if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."
