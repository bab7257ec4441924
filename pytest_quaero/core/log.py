"""Log lines shaped like the template's appendix: time, level, worker name, message.

Everything logs through the standard ``logging`` module under the ``pytest_quaero``
logger, so pytest's ``--log-cli-level`` shows the lines live and a run's own log file
(kept when a scenario fails) holds the same text.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

__all__ = ["LOGGER_NAME", "TemplateFormatter", "WorkerLog", "get_logger", "log_excerpts", "logger"]

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


if TYPE_CHECKING:
    #: what :func:`get_logger` returns
    WorkerLog = logging.LoggerAdapter[logging.Logger]
else:  # LoggerAdapter can be subscripted at run time only from Python 3.11 on
    WorkerLog = logging.LoggerAdapter


class _NamedAdapter(WorkerLog):
    def __init__(self, inner: logging.Logger, worker: str) -> None:
        super().__init__(inner, {"worker": worker})
        self.worker = worker

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("worker", self.worker)
        kwargs["extra"] = extra
        return msg, kwargs


def get_logger(name: str) -> WorkerLog:
    """A logger whose lines carry ``name`` (``JobWorker-1``, ``Producer-3``, ``WorkerPool``).

    It is the child logger ``pytest_quaero.<name>``, so pytest's live log
    (``--log-cli-level=INFO``, whose format shows ``%(name)s``) names the worker too; records
    still reach the handlers on ``pytest_quaero`` itself.
    """
    return _NamedAdapter(logging.getLogger(f"{LOGGER_NAME}.{name}"), name)


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
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return _excerpts(handle)
    except OSError:
        return {"retry": [], "retry_outcome": "", "stagger": []}


def _excerpts(lines: Iterable[str]) -> dict[str, Any]:
    stagger: list[str] = []
    chosen: list[str] = []
    outcome = ""
    open_sequences: dict[tuple[str, str], list[str]] = {}
    for raw in lines:
        line = raw.rstrip("\n")
        if len(stagger) < _MAX_STAGGER_LINES and _STAGGER_LINE.search(line):
            stagger.append(line)
        start = _RETRY_START.search(line)
        if start is not None:
            key = (start["worker"], start["subject"])
            open_sequences.setdefault(key, []).append(line)
            continue
        for (worker, subject), sequence in list(open_sequences.items()):
            if f" {worker} " not in line or subject not in line:
                continue
            if len(sequence) < _MAX_RETRY_LINES:
                sequence.append(line)
            if "Successfully completed" in line or "giving up" in line:
                del open_sequences[(worker, subject)]
                succeeded = "Successfully completed" in line
                if not chosen or (succeeded and outcome != "succeeded"):
                    chosen, outcome = sequence, "succeeded" if succeeded else "gave up"
            break
        if outcome == "succeeded" and len(stagger) >= _MAX_STAGGER_LINES:
            break
    if not chosen and open_sequences:
        chosen = next(iter(open_sequences.values()))
    return {"retry": chosen, "retry_outcome": outcome, "stagger": stagger}
