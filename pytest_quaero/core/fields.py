"""The settings table: how each setting is spelled in every source, and how its value is read.

One :class:`FieldSpec` per setting names its ``--quaero-*`` option, ``QUAERO_*``
environment variable, TOML key and ini option, and the parser that checks a raw value.
:mod:`pytest_quaero.core.settings` resolves the sources with this table; the plugin's
option table (``--help``) is built from it too, which is why this module imports
nothing but the standard library: it is read at every pytest start-up.

The duration spelling (``500ms``, ``1m30s``) is shared by every option that takes a
time, including the gate's specs and the criteria thresholds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DURATION_HELP",
    "FIELDS",
    "FIELD_BY_NAME",
    "FieldSpec",
    "SettingsError",
    "as_text",
    "format_duration",
    "parse_duration",
]


class SettingsError(ValueError):
    """A setting has a value the plugin cannot use; the message says where it came from."""


# ---------------------------------------------------------------- value parsers

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_HELP = "a duration such as 500ms, 1s, 1.5s, 5m or 1m30s"


def parse_duration(text: str) -> float:
    """``'500ms'`` -> 0.5. Go-style compounds (``1m30s``) work; a bare ``0`` is zero."""
    compact = text.strip().replace(" ", "")
    if compact in ("0", "0.0"):
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(compact):
        raise ValueError(text)
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact spelling parse_duration reads back: 0.5 -> '500ms', 300 -> '5m'."""
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000, 3)
    if ms % 60000 == 0:
        return f"{int(ms // 60000)}m"
    if ms % 1000 == 0:
        return f"{int(ms // 1000)}s"
    if ms == int(ms):
        return f"{int(ms)}ms"
    return f"{ms:g}ms"


def as_text(value: Any) -> str:
    """A raw value as a person wrote it (``true``, not ``True``), for messages and TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _int(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, int):
            number = value
        else:
            text = str(value).strip()
            if not re.fullmatch(r"[+-]?\d+", text):
                raise ValueError(value)
            number = int(text)
        if number < minimum:
            raise ValueError(value)
        return number

    return parse


def _duration(minimum: float, *, positive: bool = False) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(value)
        seconds = float(value) if isinstance(value, (int, float)) else parse_duration(str(value))
        if seconds < minimum or (positive and seconds <= 0):
            raise ValueError(value)
        return seconds

    return parse


def _milliseconds(value: Any) -> int:
    """busy_timeout: a bare number is milliseconds (as SQLite and Quaero spell it)."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        number = int(text) if re.fullmatch(r"\d+", text) else round(parse_duration(text) * 1000)
    if number < 0:
        raise ValueError(value)
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _choice(*allowed: str, upper: bool = False) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        text = text.upper() if upper else text.lower()
        if text not in allowed:
            raise ValueError(value)
        return text

    return parse


def _job_time(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low = high = float(value)
    else:
        text = str(value).strip()
        low_text, sep, high_text = text.partition("..")
        low = parse_duration(low_text)
        high = parse_duration(high_text) if sep else low
    if low < 0 or high < low:
        raise ValueError(value)
    return (low, high)


def _name(value: Any) -> str:
    text = str(value).strip()
    if not text:
        raise ValueError(value)
    return text


def _db_file(value: Any) -> str:
    text = os.path.expanduser(str(value).strip())
    # SQLite would only say "unable to open database file" once the run starts.
    if not text or os.path.isdir(text) or not os.path.isdir(os.path.dirname(os.path.abspath(text))):
        raise ValueError(value)
    return text


# ---------------------------------------------------------------- field table


@dataclass(frozen=True)
class FieldSpec:
    """One setting: how it is spelled in every source and how its value is checked."""

    name: str
    option: str
    parse: Callable[[Any], Any]
    allowed: str
    help: str
    env: str | None = None
    toml: tuple[str, str] | None = None
    ini: str | None = None
    metavar: str = "VALUE"

    def read(self, value: Any, where: str) -> Any:
        """``value`` parsed, or a SettingsError saying ``where`` it came from and what is allowed."""
        try:
            return self.parse(value)
        except (ValueError, TypeError):
            raise SettingsError(f"{where}: invalid value for {self.option}; allowed: {self.allowed}.") from None


FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("workers", "--quaero-workers", _int(1), "a whole number >= 1",
              "worker pool size (template: 2)", "QUAERO_QUEUE_CONCURRENCY",
              ("queue", "concurrency"), "quaero_workers", "N"),
    FieldSpec("stagger", "--quaero-stagger", _duration(0), DURATION_HELP + " (>= 0)",
              "delay between worker starts: worker k starts k x stagger after the pool (500ms)",
              "QUAERO_QUEUE_STAGGER", ("queue", "stagger"), "quaero_stagger", "DURATION"),
    FieldSpec("busy_timeout_ms", "--quaero-busy-timeout", _milliseconds,
              "milliseconds >= 0 (10000) or " + DURATION_HELP,
              "SQLite busy_timeout set on every connection (10000ms)", "QUAERO_SQLITE_BUSY_TIMEOUT_MS",
              ("storage.sqlite", "busy_timeout_ms"), "quaero_busy_timeout", "MS"),
    FieldSpec("retry_attempts", "--quaero-retries", _int(1), "a whole number of attempts >= 1",
              "attempts per write before a busy error escapes (5)", "QUAERO_SQLITE_RETRY_ATTEMPTS",
              ("storage.sqlite", "retry_attempts"), "quaero_retries", "N"),
    FieldSpec("retry_backoff", "--quaero-backoff", _duration(0), DURATION_HELP + " (>= 0)",
              "first retry delay, doubled on each further retry (100ms)", "QUAERO_SQLITE_RETRY_BACKOFF",
              ("storage.sqlite", "retry_backoff"), "quaero_backoff", "DURATION"),
    FieldSpec("visibility_timeout", "--quaero-visibility-timeout", _duration(0, positive=True),
              DURATION_HELP + " (> 0)", "how long a received message stays invisible (5m)",
              "QUAERO_QUEUE_VISIBILITY_TIMEOUT", ("queue", "visibility_timeout"),
              "quaero_visibility_timeout", "DURATION"),
    FieldSpec("max_receive", "--quaero-max-receive", _int(1), "a whole number >= 1",
              "deliveries before a message is dead (3)", "QUAERO_QUEUE_MAX_RECEIVE",
              ("queue", "max_receive"), "quaero_max_receive", "N"),
    FieldSpec("poll_interval", "--quaero-poll-interval", _duration(0), DURATION_HELP + " (>= 0)",
              "how long a worker waits after finding the queue empty (1s)", "QUAERO_QUEUE_POLL_INTERVAL",
              ("queue", "poll_interval"), "quaero_poll_interval", "DURATION"),
    FieldSpec("wal", "--quaero-wal", _bool, "true or false",
              "WAL journal mode (true)", "QUAERO_SQLITE_WAL_MODE", ("storage.sqlite", "wal_mode"),
              "quaero_wal", "BOOL"),
    FieldSpec("synchronous", "--quaero-synchronous", _choice("OFF", "NORMAL", "FULL", "EXTRA", upper=True),
              "OFF, NORMAL, FULL or EXTRA", "PRAGMA synchronous (NORMAL)", "QUAERO_SQLITE_SYNCHRONOUS",
              ("storage.sqlite", "synchronous"), "quaero_synchronous", "MODE"),
    FieldSpec("cache_size_mb", "--quaero-cache-size", _int(1), "megabytes, a whole number >= 1",
              "SQLite page cache per connection in MB (64)", "QUAERO_SQLITE_CACHE_SIZE_MB",
              ("storage.sqlite", "cache_size_mb"), "quaero_cache_size_mb", "MB"),
    FieldSpec("queue_name", "--quaero-queue-name", _name, "a non-empty name",
              "goqite queue name (quaero_jobs)", "QUAERO_QUEUE_NAME", ("queue", "queue_name"),
              "quaero_queue_name", "NAME"),
    FieldSpec("job_time", "--quaero-job-time", _job_time,
              "a duration (10ms) or a range low..high (5ms..20ms)",
              "simulated work per job, uniform in the range (5ms..20ms)", "QUAERO_LOAD_JOB_TIME",
              ("load_test", "job_time"), "quaero_job_time", "RANGE"),
    FieldSpec("worker_mode", "--quaero-worker-mode", _choice("thread", "process"), "thread or process",
              "workers as threads (own connection each) or processes (thread)",
              "QUAERO_LOAD_WORKER_MODE", ("load_test", "worker_mode"), "quaero_worker_mode", "MODE"),
    FieldSpec("seed", "--quaero-seed", _int(0), "a whole number >= 0",
              "seed of the simulated work times (0)", "QUAERO_LOAD_SEED", ("load_test", "seed"),
              "quaero_seed", "N"),
    FieldSpec("begin_immediate", "--quaero-begin-immediate", _bool, "true or false",
              "BEGIN IMMEDIATE for read-then-write transactions (true)", "QUAERO_SQLITE_BEGIN_IMMEDIATE",
              ("storage.sqlite", "begin_immediate"), "quaero_begin_immediate", "BOOL"),
    FieldSpec("db_path", "--quaero-db", _db_file, "a file path in an existing directory",
              "run on this SQLite file instead of a temporary one, and keep it", "QUAERO_LOAD_DB",
              ("load_test", "db"), "quaero_db", "PATH"),
)

FIELD_BY_NAME = {spec.name: spec for spec in FIELDS}
