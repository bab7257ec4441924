"""Log lines shaped like the template's appendix: time, level, worker name, message.

Everything logs through the standard ``logging`` module under the ``pytest_quaero``
logger, so pytest's ``--log-cli-level`` shows the lines live and a run's own log file
(kept when a scenario fails) holds the same text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any

__all__ = ["LOGGER_NAME", "TemplateFormatter", "get_logger", "logger"]

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
    """A logger whose lines carry ``name`` (``JobWorker-1``, ``Producer-3``, ``WorkerPool``)."""
    return _NamedAdapter(logger, {"worker": name})
