"""Log lines shaped like the template's appendix: time, level, worker name, message.

Everything logs through the standard ``logging`` module under the ``pytest_quaero``
logger, so pytest's ``--log-cli-level`` shows the lines live and a run's own log file
(kept when a scenario fails) holds the same text.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import MutableMapping
from typing import Any

__all__ = ["LOGGER_NAME", "TemplateFormatter", "get_logger", "log_excerpts", "logger"]

LOGGER_NAME = "pytest_quaero"
logger = logging.getLogger(LOGGER_NAME)

_LEVEL_NAMES = {"WARNING": "WARN", "CRITICAL": "FATAL"}


class TemplateFormatter(logging.Formatter):
    """``[2025-11-02T21:13:59.123Z] WARN  JobWorker-1 Database busy ...``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        level = _LEVEL_NAMES.get(record.levelname, record.levelname)
        worker = getattr(record, "worker", "WorkerPool")
        line = f"[{stamp}.{millis:03d}Z] {level:<5} {worker} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _NamedAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("worker", self.extra["worker"])  # type: ignore[index]
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(name: str) -> logging.LoggerAdapter:  # type: ignore[type-arg]
    """A logger whose lines carry ``name`` (``JobWorker-1``, ``Producer-3``, ``WorkerPool``).

    It is the child logger ``pytest_quaero.<name>``, so pytest's live log
    (``--log-cli-level=INFO``, whose format shows ``%(name)s``) names the worker too; records
    still reach the handlers on ``pytest_quaero`` itself.
    """
    return _NamedAdapter(logging.getLogger(f"{LOGGER_NAME}.{name}"), {"worker": name})


# Lines the Markdown report quotes as "Sample Log Excerpts". The run picks them out of its
# own log file (the reports never read files), so they travel on the RunResult to an xdist
# controller like every other measurement.
_RETRY_START = re.compile(r"\] \w+\s+(?P<worker>\S+) Database busy \((?P<code>\w+)\) on (?P<subject>.+?), retrying in ")
_STAGGER_LINE = re.compile(r"\] \w+\s+\S+ (Starting worker pool|Worker \d+ started successfully)")
_MAX_RETRY_LINES = 12
_MAX_STAGGER_LINES = 12


def log_excerpts(path: str) -> dict[str, Any]:
    """The first retry sequence (preferring one that succeeded) and the stagger lines of a run's log.

    ``{"retry": [lines], "retry_outcome": "succeeded"|"gave up"|"", "stagger": [lines]}``;
    empty lists when the log holds no such lines (or cannot be read).
    """
    stagger: list[str] = []
    chosen: list[str] = []
    outcome = ""
    open_sequences: dict[tuple[str, str], list[str]] = {}
    try:
        handle = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return {"retry": [], "retry_outcome": "", "stagger": []}
    with handle:
        for raw in handle:
            line = raw.rstrip("\n")
            if len(stagger) < _MAX_STAGGER_LINES and _STAGGER_LINE.search(line):
                stagger.append(line)
            start = _RETRY_START.search(line)
            if start is not None:
                key = (start["worker"], start["subject"])
                open_sequences.setdefault(key, []).append(line)
                continue
            for (worker, subject), lines in list(open_sequences.items()):
                if f" {worker} " not in line or subject not in line:
                    continue
                if len(lines) < _MAX_RETRY_LINES:
                    lines.append(line)
                if "Successfully completed" in line or "giving up" in line:
                    del open_sequences[(worker, subject)]
                    succeeded = "Successfully completed" in line
                    if not chosen or (succeeded and outcome != "succeeded"):
                        chosen, outcome = lines, "succeeded" if succeeded else "gave up"
                break
            if outcome == "succeeded" and len(stagger) >= _MAX_STAGGER_LINES:
                break
    if not chosen and open_sequences:
        chosen = next(iter(open_sequences.values()))
    return {"retry": chosen, "retry_outcome": outcome, "stagger": stagger}
