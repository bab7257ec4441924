"""Effective settings of a load run, resolved once from every source.

Sources, highest first: ``--quaero-*`` command-line options, ``QUAERO_*``
environment variables, the TOML file given with ``--quaero-config`` (Quaero's
own format: ``[queue]`` and ``[storage.sqlite]``), ``quaero_*`` ini options,
then the defaults of the team's load-test template. Every error names the
option, where its value came from and what is allowed, so a typo in CI reads
as one sentence instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FIELDS",
    "FieldSpec",
    "Settings",
    "SettingsError",
    "format_duration",
    "parse_duration",
    "resolve",
    "to_toml",
]


#: where baselines are stored when ``--quaero-save-baseline`` names no file (rootdir-relative)
DEFAULT_BASELINE_STORE = ".quaero/baseline.json"


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


def _as_text(value: Any) -> str:
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

# Keys of Quaero's own config format that mean nothing to a load run but must not be
# rejected, so the team's real quaero.toml loads as it is.
_IGNORED_TOML_KEYS = {
    ("storage", "type"),
    # The service's own database: a load test writes only where --quaero-db (or [load_test] db)
    # points it, never into the file a team's real quaero.toml names.
    ("storage.sqlite", "path"),
    ("storage.sqlite", "enable_fts5"),
    ("storage.sqlite", "enable_vector"),
    ("storage.sqlite", "embedding_dimension"),
}
_TOML_SECTIONS = ("queue", "storage", "storage.sqlite", "load_test", "thresholds")


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, validated; ``sources`` says where each value came from."""

    workers: int = 2
    stagger: float = 0.5
    busy_timeout_ms: int = 10_000
    retry_attempts: int = 5
    retry_backoff: float = 0.1
    visibility_timeout: float = 300.0
    max_receive: int = 3
    poll_interval: float = 1.0
    wal: bool = True
    synchronous: str = "NORMAL"
    cache_size_mb: int = 64
    queue_name: str = "quaero_jobs"
    job_time: tuple[float, float] = (0.005, 0.020)
    worker_mode: str = "thread"
    seed: int = 0
    begin_immediate: bool = True
    db_path: str | None = None
    #: threshold overrides, ``{scenario or "*": {criterion key: raw value}}``, checked by criteria
    thresholds: Mapping[str, Mapping[str, str]] = field(default_factory=dict, compare=False)
    #: where each threshold override came from, keyed ``"scope.key"`` (scope ``*`` = every scenario)
    threshold_sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def replace(self, source: str = "override", **changes: Any) -> Settings:
        """A copy with ``changes`` parsed as if they came from ``source`` (e.g. a marker)."""
        parsed: dict[str, Any] = {}
        sources = dict(self.sources)
        for name, value in changes.items():
            spec = FIELD_BY_NAME.get(name)
            if spec is None:
                raise SettingsError(
                    f"{source}: unknown setting {name!r}; known settings: {', '.join(FIELD_BY_NAME)}"
                )
            parsed[name] = _parse(spec, value, f"{name}={_as_text(value)!r} ({source})")
            sources[name] = source
        return dataclasses.replace(self, sources=sources, **parsed)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, as the reports and baselines store them."""
        out: dict[str, Any] = {}
        for spec in FIELDS:
            value = getattr(self, spec.name)
            out[spec.name] = list(value) if isinstance(value, tuple) else value
        return out

    def describe(self, name: str) -> str:
        """The value as a person writes it: '500ms', '5ms..20ms', '10000ms'."""
        value = getattr(self, name)
        if name == "busy_timeout_ms":
            return f"{value}ms"
        if name == "job_time":
            low, high = value
            return format_duration(low) if low == high else f"{format_duration(low)}..{format_duration(high)}"
        if name in ("stagger", "retry_backoff", "visibility_timeout", "poll_interval"):
            return format_duration(value)
        if value is None:
            return "(temporary file)"
        return _as_text(value)


def _parse(spec: FieldSpec, value: Any, where: str) -> Any:
    try:
        return spec.parse(value)
    except (ValueError, TypeError):
        raise SettingsError(f"{where}: invalid value for {spec.option}; allowed: {spec.allowed}.") from None


def _load_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised by the py310 tox env
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(f"--quaero-config={path}: no such file.") from None
    except OSError as exc:
        raise SettingsError(f"--quaero-config={path}: cannot be read ({exc.strerror}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"--quaero-config={path}: not valid TOML ({exc}).") from None


def _flatten_toml(path: str, data: Mapping[str, Any]) -> tuple[dict[tuple[str, str], Any], dict[str, dict[str, str]]]:
    """Split a config file into setting values and threshold overrides, rejecting unknown keys."""
    known = {spec.toml: spec for spec in FIELDS if spec.toml}
    values: dict[tuple[str, str], Any] = {}
    thresholds: dict[str, dict[str, str]] = {}

    def walk(prefix: str, table: Mapping[str, Any]) -> None:
        for key, value in table.items():
            section_key = (prefix, key)
            dotted = f"{prefix}.{key}" if prefix else key
            if prefix == "thresholds" or prefix.startswith("thresholds."):
                if isinstance(value, Mapping) and prefix == "thresholds":
                    thresholds.setdefault(key, {}).update({k: _as_text(v) for k, v in value.items()})
                else:
                    scenario = prefix.partition(".")[2] or "*"
                    thresholds.setdefault(scenario, {})[key] = _as_text(value)
                continue
            if isinstance(value, Mapping):
                if dotted not in _TOML_SECTIONS:
                    raise SettingsError(
                        f"--quaero-config={path}: unknown section [{dotted}]; "
                        f"allowed sections: {', '.join('[' + s + ']' for s in _TOML_SECTIONS)}."
                    )
                walk(dotted, value)
            elif section_key in known:
                values[section_key] = value
            elif section_key not in _IGNORED_TOML_KEYS:
                allowed = sorted(f"{s}.{k}" for s, k in known if s == prefix)
                raise SettingsError(
                    f"--quaero-config={path}: unknown key {key!r} in [{prefix or 'top level'}]; "
                    f"allowed keys there: {', '.join(k.rpartition('.')[2] for k in allowed) or 'none'}."
                )

    walk("", data)
    return values, thresholds


def _threshold_lines(lines: list[str], where: str) -> dict[str, dict[str, str]]:
    """``medium.min_throughput = 20`` or ``max_busy_errors = 0`` (all scenarios)."""
    out: dict[str, dict[str, str]] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise SettingsError(
                f"{where}: {line!r} is not a threshold; write [SCENARIO.]CRITERION = VALUE, "
                "for example medium.min_throughput = 20."
            )
        scenario, dot, name = key.rpartition(".")
        out.setdefault(scenario if dot else "*", {})[name] = value
    return out


def resolve(
    cli: Mapping[str, Any],
    env: Mapping[str, str],
    ini: Mapping[str, Any],
    *,
    config_file: str | None = None,
    ini_name: str = "ini file",
    threshold_cli: list[str] | None = None,
    threshold_ini: list[str] | None = None,
) -> Settings:
    """Merge every source into one validated Settings; raises SettingsError naming the culprit."""
    toml_values: dict[tuple[str, str], Any] = {}
    thresholds: dict[str, dict[str, str]] = {}
    threshold_sources: dict[str, str] = {}
    if threshold_ini:
        where = f"quaero_thresholds ({ini_name})"
        _merge_thresholds(thresholds, _threshold_lines(threshold_ini, where), threshold_sources, where)
    if config_file:
        toml_values, file_thresholds = _flatten_toml(config_file, _load_toml(config_file))
        _merge_thresholds(thresholds, file_thresholds, threshold_sources, f"[thresholds] in {config_file}")
    if threshold_cli:
        where = "--quaero-threshold (command line)"
        _merge_thresholds(thresholds, _threshold_lines(threshold_cli, where), threshold_sources, where)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in FIELDS:
        candidates = [
            (cli.get(spec.name), f"{spec.option}={{value}} (command line)", "command line"),
            (env.get(spec.env) if spec.env else None, f"{spec.env}={{value}} (environment)", f"{spec.env}"),
        ]
        if spec.toml:
            section, key = spec.toml
            candidates.append(
                (toml_values.get(spec.toml), f"{key} = {{value}} in [{section}] of {config_file}",
                 f"{config_file} [{section}] {key}")
            )
        if spec.ini:
            candidates.append((ini.get(spec.ini), f"{spec.ini} = {{value}} ({ini_name})", f"{spec.ini} ({ini_name})"))
        for raw, where, source in candidates:
            if raw is None or (isinstance(raw, str) and raw == ""):
                continue
            values[spec.name] = _parse(spec, raw, where.format(value=_as_text(raw)))
            sources[spec.name] = source
            break
        else:
            sources[spec.name] = "default"
    return Settings(**values, thresholds=thresholds, threshold_sources=threshold_sources, sources=sources)


def _merge_thresholds(
    into: dict[str, dict[str, str]], new: Mapping[str, Mapping[str, str]], sources: dict[str, str], where: str
) -> None:
    for scenario, entries in new.items():
        into.setdefault(scenario, {}).update(entries)
        for key in entries:
            sources[f"{scenario}.{key}"] = where


def to_toml(settings: Settings) -> str:
    """The effective settings in Quaero's TOML format; ``--quaero-config`` loads it back."""
    sections: dict[str, list[str]] = {}
    for spec in FIELDS:
        if spec.toml is None:
            continue
        value = getattr(settings, spec.name)
        if value is None:
            continue
        section, key = spec.toml
        if spec.name == "busy_timeout_ms":
            rendered = str(value)
        elif isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, (int,)):
            rendered = str(value)
        else:
            rendered = '"' + settings.describe(spec.name).replace("\\", "\\\\").replace('"', '\\"') + '"'
        sections.setdefault(section, []).append(f"{key} = {rendered}")
    blocks = []
    for section in ("queue", "storage.sqlite", "load_test"):
        if section in sections:
            blocks.append(f"[{section}]\n" + "\n".join(sections[section]))
    return "\n\n".join(blocks) + "\n"

