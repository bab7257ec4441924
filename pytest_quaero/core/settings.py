"""Effective settings of a load run, resolved once from every source.

Sources, highest first: ``--quaero-*`` command-line options, ``QUAERO_*``
environment variables (the option's own name, then the Quaero service's), the
TOML file given with ``--quaero-config`` (Quaero's own format: ``[queue]`` and
``[storage.sqlite]``), ``quaero_*`` ini options, then the defaults of the team's
load-test template. Every error names the option, where its value came from and
what is allowed, so a typo in CI reads as one sentence instead of a traceback. How each setting is spelled and parsed
is the table in :mod:`pytest_quaero.core.fields`.

The plugin reads this module at every pytest start-up: it imports nothing beyond
the standard library and that table.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_quaero.core.explore.spec import explore_usage_error
from pytest_quaero.core.fields import (
    FIELD_BY_NAME,
    FIELDS,
    FieldSpec,
    SettingsError,
    as_text,
    format_duration,
    parse_duration,
    shown,
)

__all__ = [
    "DEFAULT_BASELINE_STORE",
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
    #: ``random:500``: each scenario runs under that many explored schedules (:mod:`~pytest_quaero.core.explore`)
    explore: str | None = None
    #: a replay token: each scenario runs under exactly that explored schedule
    replay: str | None = None
    begin_immediate: bool = True
    #: a command line run as the worker pool instead of the built-in workers (:mod:`~pytest_quaero.core.external`)
    worker_command: str | None = None
    worker_processes: str = "one"
    #: built-in workers draining the queue beside the worker command (a mixed pool)
    builtin_workers: int = 0
    worker_start_timeout: float = 30.0
    worker_stop_grace: float = 5.0
    db_path: str | None = None
    #: ``sqlite`` or ``postgresql`` (:mod:`pytest_quaero.core.postgresql`); with postgresql and no
    #: ``dsn`` the plugin starts a throwaway server of its own
    backend: str = "sqlite"
    dsn: str | None = None
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
            parsed[name] = spec.read(value, f"{name}={shown(repr(value))} ({source})")
            sources[name] = source
        return dataclasses.replace(self, sources=sources, **parsed)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, as the reports and baselines store them."""
        out: dict[str, Any] = {}
        for spec in FIELDS:
            value = getattr(self, spec.name)
            out[spec.name] = list(value) if isinstance(value, tuple) else value
        if out.get("dsn"):  # reports and baselines keep the settings: never a password
            from pytest_quaero.core.postgresql import redact_dsn  # deferred: only a DSN needs it

            out["dsn"] = redact_dsn(out["dsn"])
        return out

    def describe(self, name: str) -> str:
        """The value as a person writes it: '500ms', '5ms..20ms', '10000ms'."""
        value = getattr(self, name)
        if name == "busy_timeout_ms":
            return f"{value}ms"
        if name == "job_time":
            low, high = value
            return format_duration(low) if low == high else f"{format_duration(low)}..{format_duration(high)}"
        if name in ("stagger", "retry_backoff", "visibility_timeout", "poll_interval", "worker_start_timeout",
                    "worker_stop_grace"):
            return format_duration(value)
        if name == "dsn":
            from pytest_quaero.core.postgresql import redact_dsn  # deferred: only a DSN needs it

            return redact_dsn(value) if value else "(embedded server)"
        if value is None:
            return {"worker_command": "(built-in workers)", "explore": "(off)", "replay": "(off)"}.get(
                name, "(temporary file)")
        return as_text(value)


def _load_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib  # deferred: only --quaero-config reads TOML, and this module is read at every start-up
    else:  # pragma: no cover - exercised by the py310 tox env
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]  # absent on 3.11+
    try:
        # stat first: open() on a FIFO waits for a writer forever, and a device may never end
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = "no such file" if isinstance(exc, FileNotFoundError) else (
            f"cannot be read ({getattr(exc, 'strerror', None) or exc})")
        raise SettingsError(f"--quaero-config={path}: {reason}.") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
        raise SettingsError(f"--quaero-config={path}: cannot be read (it is {kind}, not a regular file); "
                            "give the path of a TOML file.")
    try:
        with open(path, "rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
            return data
    except FileNotFoundError:
        raise SettingsError(f"--quaero-config={path}: no such file.") from None
    except OSError as exc:
        raise SettingsError(f"--quaero-config={path}: cannot be read ({exc.strerror}).") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"--quaero-config={path}: not valid TOML ({exc}).") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"--quaero-config={path}: not valid TOML (not UTF-8 text: {exc.reason} "
                            f"at byte {exc.start}).") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise SettingsError(f"--quaero-config={path}: not valid TOML for Quaero (arrays or inline tables "
                            "nested too deeply to read).") from None


def _flatten_toml(path: str, data: Mapping[str, Any]) -> tuple[dict[tuple[str, str], Any], dict[str, dict[str, str]]]:
    """Split a config file into setting values and threshold overrides, rejecting unknown keys."""
    known = {spec.toml: spec for spec in FIELDS if spec.toml}
    values: dict[tuple[str, str], Any] = {}
    thresholds: dict[str, dict[str, str]] = {}

    def walk(prefix: str, table: Mapping[str, Any]) -> None:
        for key, value in table.items():
            section_key = (prefix, key)
            dotted = f"{prefix}.{key}" if prefix else key
            if prefix == "thresholds":
                # [thresholds] key = value (every scenario), or [thresholds.SCENARIO] key = value
                scope, entries = (key, value) if isinstance(value, Mapping) else ("*", {key: value})
                for name, raw in entries.items():
                    if isinstance(raw, (Mapping, list)):
                        where = f"[thresholds{'' if scope == '*' else '.' + scope}] {name}"
                        raise SettingsError(f"--quaero-config={path}: {where}: a threshold is one value (a number, "
                                            "a duration or a percentage), not a table or an array.")
                    thresholds.setdefault(scope, {})[name] = as_text(raw)
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
        # (raw value, the message's words before and after the value, the source recorded)
        candidates = [(cli.get(spec.name), f"{spec.option}=", " (command line)", "command line")]
        candidates += [(env.get(name), f"{name}=", " (environment)", name) for name in spec.env_names]
        if spec.toml:
            section, key = spec.toml
            candidates.append(
                (toml_values.get(spec.toml), f"{key} = ", f" in [{section}] of {config_file}",
                 f"{config_file} [{section}] {key}")
            )
        if spec.ini:
            candidates.append((ini.get(spec.ini), f"{spec.ini} = ", f" ({ini_name})", f"{spec.ini} ({ini_name})"))
        candidates += [(ini.get(old), f"{old} = ", f" ({ini_name}; deprecated name of {spec.ini})",
                        f"{old} ({ini_name})") for old in spec.deprecated_ini]
        for raw, before, after, source in candidates:
            if raw is None or (isinstance(raw, str) and raw == ""):
                continue
            values[spec.name] = spec.read(raw, f"{before}{shown(raw)}{after}")
            sources[spec.name] = source
            break
        else:
            sources[spec.name] = "default"
    if values.get("backend") == "postgresql" or values.get("dsn"):
        # deferred: a SQLite run never looks at the PostgreSQL backend (it imports only the standard library)
        from pytest_quaero.core.postgresql import usage_error

        problem = usage_error(values.get("backend"), values.get("dsn"), sources)
        if problem is not None:
            raise SettingsError(problem)
    problem = explore_usage_error(values, sources)  # exploration needs thread workers on SQLite
    if problem is not None:
        raise SettingsError(problem)
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

