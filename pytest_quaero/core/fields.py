"""The settings table: how each setting is spelled in every source, and how its value is read.

One :class:`FieldSpec` per setting names its ``--quaero-*`` option, the ``QUAERO_*``
environment variable spelled after it (``--quaero-workers``: ``QUAERO_WORKERS``) and the
Quaero service's own variable for it (``QUAERO_QUEUE_CONCURRENCY``, read too), the TOML
key and the ini option, and the parser that checks a raw value.
:mod:`pytest_quaero.core.settings` resolves the sources with this table; the plugin's
option table (``--help``) is built from it too, which is why this module imports
nothing but the standard library: it is read at every pytest start-up.

The duration spelling (``500ms``, ``1m30s``) is shared by every option that takes a
time, including the gate's specs and the criteria thresholds.
"""

from __future__ import annotations

import math
import os
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_quaero.core.explore.spec import EXPLORE_ALLOWED, REPLAY_ALLOWED, explore_text, replay_text

__all__ = [
    "DURATION_HELP",
    "FIELDS",
    "FIELD_BY_NAME",
    "MAX_DURATION_TEXT",
    "MAX_SECONDS",
    "FieldSpec",
    "SettingsError",
    "as_text",
    "format_duration",
    "parse_decimal",
    "parse_duration",
    "parse_whole",
    "shown",
]


class SettingsError(ValueError):
    """A setting has a value the plugin cannot use; the message says where it came from."""


# ---------------------------------------------------------------- limits

#: The longest duration anything takes (a setting, a time limit, a threshold, a spec's
#: ``at=``): a year. Far past any sensible run, and far inside what the OS can wait for
#: (``threading.TIMEOUT_MAX``, ~292 years) and what SQLite's ``strftime`` deadline
#: (now + visibility timeout) can hold (the year 9999).
MAX_SECONDS = 365 * 24 * 3600.0
MAX_DURATION_TEXT = "8760h"
#: SQLite's integers are 64-bit: a larger Python int cannot even be bound to a statement.
_INT64_MAX = 2**63 - 1
#: PRAGMA busy_timeout is a C int: a larger value silently becomes 0 (no waiting at all).
_MAX_BUSY_TIMEOUT_MS = 2**31 - 1
#: PRAGMA cache_size = -KiB is a C int too: -(MB x 1024) must stay >= -2**31.
_MAX_CACHE_SIZE_MB = 2**31 // 1024
#: one thread (or process) and one SQLite connection each: a pool beyond this is not a test
_MAX_WORKERS = 10_000


# ---------------------------------------------------------------- value parsers

# [0-9], never \d: \d, int() and float() also take fullwidth (U+FF15) and Arabic-Indic (U+0665) digits.
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_WHOLE = re.compile(r"[+-]?[0-9]+")
DURATION_HELP = "a duration such as 500ms, 1s, 1.5s, 5m or 1m30s"


def parse_duration(text: str) -> float:
    """``'500ms'`` -> 0.5. Go-style compounds (``1m30s``) work; a bare ``0`` is zero.

    ASCII digits only, nothing between the parts (`` 1 0 0 m s `` is no duration), and
    at most :data:`MAX_SECONDS`: every duration option of the plugin reads through here.
    """
    compact = text.strip()
    if compact in ("0", "0.0"):
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(compact) or not total <= MAX_SECONDS:  # `not <=`: also NaN
        raise ValueError(text)
    return total


def parse_decimal(text: str) -> float:
    """``'12.5'`` -> 12.5: ASCII digits and one point; no sign, exponent, ``_``, ``inf`` or ``nan``.

    ``float()`` takes all of those (and fullwidth digits); a threshold or percentage must not.
    """
    compact = text.strip()
    if not _DECIMAL.fullmatch(compact):
        raise ValueError(text)
    value = float(compact)
    if not math.isfinite(value):  # 400 digits are finite text but an infinite float
        raise ValueError(text)
    return value


def parse_whole(text: str) -> int:
    """``'42'`` -> 42 (a sign is allowed): ASCII digits only, unlike ``int()``."""
    compact = text.strip()
    if not _WHOLE.fullmatch(compact):
        raise ValueError(text)
    return int(compact)  # over 4300 digits int() raises ValueError itself


def format_duration(seconds: float) -> str:
    """The shortest exact spelling parse_duration reads back: 0.5 -> '500ms', 300 -> '5m', 7200 -> '2h'."""
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000, 3)
    if ms % 3_600_000 == 0:
        return f"{int(ms // 3_600_000)}h"
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


def shown(value: Any, limit: int = 80) -> str:
    """A raw value for a one-line message: control characters escaped, long values cut short.

    An array or table (a TOML value) is shown a few levels deep: a nested one may be deeper
    than ``str()`` can go.
    """
    text = as_text(value) if isinstance(value, (str, int, float, bool)) else reprlib.repr(value)
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seconds(value: Any) -> float:
    """A duration from a TOML/marker number (seconds) or a string; finite and <= MAX_SECONDS."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        seconds = float(value)  # OverflowError past 1e308 (an ArithmeticError: read() catches it)
        if not 0 <= seconds <= MAX_SECONDS:  # NaN too
            raise ValueError(value)
        return seconds
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(value)


def _int(minimum: int, maximum: int = _INT64_MAX) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, int):
            number = value
        elif isinstance(value, str):
            number = parse_whole(value)
        else:
            raise ValueError(value)
        if not minimum <= number <= maximum:
            raise ValueError(value)
        return number

    return parse


def _duration(minimum: float, *, positive: bool = False) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        seconds = _seconds(value)
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
    elif isinstance(value, str):
        text = value.strip()
        number = int(text) if re.fullmatch(r"[0-9]+", text) else round(parse_duration(text) * 1000)
    else:
        raise ValueError(value)
    if not 0 <= number <= _MAX_BUSY_TIMEOUT_MS:
        raise ValueError(value)
    return number


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if not isinstance(value, (str, int)):
        raise ValueError(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _choice(*allowed: str, upper: bool = False) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        # isascii: 'oﬀ'.upper() is 'OFF'
        if not isinstance(value, str) or not value.isascii():
            raise ValueError(value)
        text = value.strip()
        text = text.upper() if upper else text.lower()
        if text not in allowed:
            raise ValueError(value)
        return text

    return parse


def _job_time(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low = high = _seconds(value)
    elif isinstance(value, str):
        low_text, sep, high_text = value.strip().partition("..")
        low = parse_duration(low_text)
        high = parse_duration(high_text) if sep else low
    else:
        raise ValueError(value)
    if low < 0 or high < low:
        raise ValueError(value)
    return (low, high)


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(value)
    text = value.strip()
    # printable: it is shown in every report line; encodable: SQLite stores it as UTF-8
    if not text or not text.isprintable():
        raise ValueError(value)
    text.encode("utf-8")  # a lone surrogate (os.environ's undecodable bytes) raises UnicodeEncodeError
    return text


def _db_file(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(value)
    text = os.path.expanduser(os.fsdecode(value).strip())
    # SQLite would only say "unable to open database file" once the run starts.
    if not text or "\0" in text or os.path.isdir(text) or not os.path.isdir(os.path.dirname(os.path.abspath(text))):
        raise ValueError(value)
    return text


def _command(value: Any) -> str:
    from pytest_quaero.core.commandline import parse_command  # deferred: read only when a worker command is set

    return parse_command(value)


# ---------------------------------------------------------------- field table


@dataclass(frozen=True)
class FieldSpec:
    """One setting: how it is spelled in every source and how its value is checked."""

    name: str
    option: str
    parse: Callable[[Any], Any]
    allowed: str
    help: str
    #: the variable the Quaero service itself reads (``QUAERO_QUEUE_CONCURRENCY``): read too, after
    #: :attr:`env`, so a CI job that already exports the service's settings tests with them
    service_env: str | None = None
    toml: tuple[str, str] | None = None
    ini: str | None = None
    metavar: str = "VALUE"

    #: a number, duration or keyword: only ASCII is read (a name or a path may be anything)
    ascii_only: bool = True
    #: how ``pytest --help`` types the ini key: ``int`` or ``bool`` where every value is one
    ini_type: str = "string"
    #: earlier spellings of the ini key, still read (with a deprecation warning)
    deprecated_ini: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        """The option's own variable: ``--quaero-busy-timeout`` -> ``QUAERO_BUSY_TIMEOUT``."""
        return self.option.lstrip("-").replace("-", "_").upper()

    @property
    def env_names(self) -> tuple[str, ...]:
        """Every variable read, first wins: the option's own, then the service's."""
        if self.service_env is None or self.service_env == self.env:
            return (self.env,)
        return (self.env, self.service_env)

    def read(self, value: Any, where: str) -> Any:
        """``value`` parsed, or a SettingsError saying ``where`` it came from and what is allowed.

        Every source (command line, environment, TOML, ini, marker) reads through here.
        """
        try:
            # int(), float() and str.upper() read fullwidth and Arabic-Indic digits and ligatures ('oﬀ'
            # is 'OFF'): numbers and keywords are plain ASCII, with no space inside (' 1 0 0 m s ')
            if self.ascii_only and isinstance(value, str) and (
                    not value.isascii() or any(char.isspace() for char in value.strip())):
                raise ValueError(value)
            return self.parse(value)
        except (ValueError, TypeError, ArithmeticError):  # ArithmeticError: float(10**400)
            hint = ""
            if self.ascii_only and isinstance(value, str) and not value.isascii():
                odd = next(char for char in value if not char.isascii())
                hint = f" ({odd!r} is not ASCII: write digits, units and words in ASCII)"
            raise SettingsError(
                f"{where}: invalid value for {self.option}; allowed: {self.allowed}{hint}."
            ) from None


_DURATION_ALLOWED = f"{DURATION_HELP} (>= 0), at most {MAX_DURATION_TEXT}"
_INT64 = " that fits in 64 bits"

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("workers", "--quaero-workers", _int(1, _MAX_WORKERS), f"a whole number >= 1 (at most {_MAX_WORKERS})",
              "worker pool size (template: 2)", "QUAERO_QUEUE_CONCURRENCY",
              ("queue", "concurrency"), "quaero_workers", "N", ini_type="int"),
    FieldSpec("stagger", "--quaero-stagger", _duration(0), _DURATION_ALLOWED,
              "delay between worker starts: worker k starts k x stagger after the pool (500ms)",
              "QUAERO_QUEUE_STAGGER", ("queue", "stagger"), "quaero_stagger", "DURATION"),
    FieldSpec("busy_timeout_ms", "--quaero-busy-timeout", _milliseconds,
              f"milliseconds >= 0 (10000) or {DURATION_HELP}, at most {_MAX_BUSY_TIMEOUT_MS}ms "
              "(SQLite's limit, about 24.8 days)",
              "SQLite busy_timeout set on every connection (10000ms)", "QUAERO_SQLITE_BUSY_TIMEOUT_MS",
              ("storage.sqlite", "busy_timeout_ms"), "quaero_busy_timeout", "MS"),
    FieldSpec("retry_attempts", "--quaero-retries", _int(1), "a whole number of attempts >= 1" + _INT64,
              "attempts per write before a busy error escapes (5)", "QUAERO_SQLITE_RETRY_ATTEMPTS",
              ("storage.sqlite", "retry_attempts"), "quaero_retries", "N", ini_type="int"),
    FieldSpec("retry_backoff", "--quaero-backoff", _duration(0), _DURATION_ALLOWED,
              "first retry delay, doubled on each further retry (100ms)", "QUAERO_SQLITE_RETRY_BACKOFF",
              ("storage.sqlite", "retry_backoff"), "quaero_backoff", "DURATION"),
    FieldSpec("visibility_timeout", "--quaero-visibility-timeout", _duration(0, positive=True),
              f"{DURATION_HELP} (> 0), at most {MAX_DURATION_TEXT}", "how long a received message stays invisible (5m)",
              "QUAERO_QUEUE_VISIBILITY_TIMEOUT", ("queue", "visibility_timeout"),
              "quaero_visibility_timeout", "DURATION"),
    FieldSpec("max_receive", "--quaero-max-receive", _int(1), "a whole number >= 1" + _INT64,
              "deliveries before a message is dead (3)", "QUAERO_QUEUE_MAX_RECEIVE",
              ("queue", "max_receive"), "quaero_max_receive", "N", ini_type="int"),
    FieldSpec("poll_interval", "--quaero-poll-interval", _duration(0), _DURATION_ALLOWED,
              "how long a worker waits after finding the queue empty (1s)", "QUAERO_QUEUE_POLL_INTERVAL",
              ("queue", "poll_interval"), "quaero_poll_interval", "DURATION"),
    FieldSpec("wal", "--quaero-wal", _bool, "true or false",
              "WAL journal mode (true)", "QUAERO_SQLITE_WAL_MODE", ("storage.sqlite", "wal_mode"),
              "quaero_wal", "BOOL", ini_type="bool"),
    FieldSpec("synchronous", "--quaero-synchronous", _choice("OFF", "NORMAL", "FULL", "EXTRA", upper=True),
              "OFF, NORMAL, FULL or EXTRA", "PRAGMA synchronous (NORMAL)", "QUAERO_SQLITE_SYNCHRONOUS",
              ("storage.sqlite", "synchronous"), "quaero_synchronous", "MODE"),
    FieldSpec("cache_size_mb", "--quaero-cache-size", _int(1, _MAX_CACHE_SIZE_MB),
              f"megabytes, a whole number >= 1 (at most {_MAX_CACHE_SIZE_MB}, SQLite's limit)",
              "SQLite page cache per connection in MB (64)", "QUAERO_SQLITE_CACHE_SIZE_MB",
              ("storage.sqlite", "cache_size_mb"), "quaero_cache_size", "MB", ini_type="int",
              deprecated_ini=("quaero_cache_size_mb",)),
    FieldSpec("queue_name", "--quaero-queue-name", _name, "a non-empty name of printable characters",
              "goqite queue name (quaero_jobs)", "QUAERO_QUEUE_NAME", ("queue", "queue_name"),
              "quaero_queue_name", "NAME", ascii_only=False),
    FieldSpec("job_time", "--quaero-job-time", _job_time,
              f"a duration (10ms) or a range low..high (5ms..20ms), at most {MAX_DURATION_TEXT}",
              "simulated work per job, uniform in the range (5ms..20ms)", "QUAERO_LOAD_JOB_TIME",
              ("load_test", "job_time"), "quaero_job_time", "RANGE"),
    FieldSpec("worker_mode", "--quaero-worker-mode", _choice("thread", "process"), "thread or process",
              "workers as threads (own connection each) or processes (thread)",
              "QUAERO_LOAD_WORKER_MODE", ("load_test", "worker_mode"), "quaero_worker_mode", "MODE"),
    FieldSpec("seed", "--quaero-seed", _int(0), "a whole number >= 0" + _INT64,
              "seed of the simulated work times (0)", "QUAERO_LOAD_SEED", ("load_test", "seed"),
              "quaero_seed", "N", ini_type="int"),
    FieldSpec("explore", "--quaero-explore", explore_text, EXPLORE_ALLOWED,
              "run each scenario under N explored schedules (one token passed between the worker threads at every "
              "statement) instead of once free-running; the first failing schedule prints its --quaero-replay token",
              "QUAERO_EXPLORE", ("load_test", "explore"), "quaero_explore", "STRATEGY:N"),
    FieldSpec("replay", "--quaero-replay", replay_text, REPLAY_ALLOWED,
              "run each scenario under exactly the explored schedule this token names (a failure prints it)",
              "QUAERO_REPLAY", ("load_test", "replay"), "quaero_replay", "TOKEN"),
    FieldSpec("begin_immediate", "--quaero-begin-immediate", _bool, "true or false",
              "BEGIN IMMEDIATE for read-then-write transactions (true)", "QUAERO_SQLITE_BEGIN_IMMEDIATE",
              ("storage.sqlite", "begin_immediate"), "quaero_begin_immediate", "BOOL",
              ini_type="bool"),
    FieldSpec("worker_command", "--quaero-worker-command", _command,
              "a command line whose program is on PATH or is an executable file, or a Go module directory "
              "(a directory with go.mod, built once per session)",
              "run this command as the worker pool (any language; JSON-lines events, see the README) "
              "instead of the built-in Python workers", "QUAERO_WORKER_COMMAND", ("queue", "worker_command"),
              "quaero_worker_command", "COMMAND", ascii_only=False),
    FieldSpec("worker_processes", "--quaero-worker-processes", _choice("one", "per-worker"), "one or per-worker",
              "with --quaero-worker-command: one process running every worker, or one process per worker (one)",
              "QUAERO_WORKER_PROCESSES", ("queue", "worker_processes"), "quaero_worker_processes", "MODE"),
    FieldSpec("builtin_workers", "--quaero-builtin-workers", _int(0, _MAX_WORKERS),
              f"a whole number >= 0 (at most {_MAX_WORKERS})",
              "with --quaero-worker-command: built-in Python workers draining the same queue beside it (0)",
              "QUAERO_BUILTIN_WORKERS", ("queue", "builtin_workers"), "quaero_builtin_workers", "N",
              ini_type="int"),
    FieldSpec("worker_start_timeout", "--quaero-worker-start-timeout", _duration(0, positive=True),
              f"{DURATION_HELP} (> 0), at most {MAX_DURATION_TEXT}",
              "how long a worker command may take to say hello (30s)", "QUAERO_WORKER_START_TIMEOUT",
              ("queue", "worker_start_timeout"), "quaero_worker_start_timeout", "DURATION"),
    FieldSpec("worker_stop_grace", "--quaero-worker-stop-grace", _duration(0), _DURATION_ALLOWED,
              "how long a worker command may take to stop after SIGTERM before SIGKILL (5s)",
              "QUAERO_WORKER_STOP_GRACE", ("queue", "worker_stop_grace"), "quaero_worker_stop_grace", "DURATION"),
    FieldSpec("backend", "--quaero-backend", _choice("sqlite", "postgresql"), "sqlite or postgresql",
              "the queue's database: a SQLite file, or PostgreSQL (a throwaway server, or --quaero-dsn) (sqlite)",
              None, ("load_test", "backend"), "quaero_backend", "NAME"),
    FieldSpec("dsn", "--quaero-dsn", _name, "a PostgreSQL DSN: postgresql://user:password@host:port/database",
              "with --quaero-backend=postgresql: run on this server, one schema per run, instead of a throwaway one",
              None, ("load_test", "dsn"), "quaero_dsn", "DSN", ascii_only=False),
    FieldSpec("db_path", "--quaero-db", _db_file, "a file path in an existing directory",
              "run on this SQLite file instead of a temporary one, and keep it", "QUAERO_LOAD_DB",
              ("load_test", "db"), "quaero_db", "PATH", ascii_only=False),
)

FIELD_BY_NAME = {spec.name: spec for spec in FIELDS}
