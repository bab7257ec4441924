"""Every ``--quaero-*`` option and ``quaero_*`` ini key, in one place.

Settings fields come from the :data:`~pytest_quaero.core.settings.FIELDS` table;
the rest (reports, the regression gate, audit, xdist) are listed here so
``pytest --help`` shows one group. Each setting's help names its environment
variables; its ini key is typed (``int``, ``bool``) where pytest has the type.
argparse %-formats every help string: write a literal percent sign as ``%%`` (tests/test_help.py runs ``--help``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from pytest_quaero.core.settings import DEFAULT_BASELINE_STORE, FIELDS

__all__ = ["PROGRESS_MODES", "add_options", "read_ini"]

PROGRESS_MODES = ("auto", "live", "plain", "off")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("quaero", "database-lock regression testing (pytest-quaero)")
    group.addoption(
        "--quaero-scenario", dest="quaero_scenario", metavar="NAME[,NAME]",
        help="run these load scenarios as test items: light (5x20), medium (10x50), heavy (15x100), "
        "a comma-separated list, or all.",
    )
    group.addoption(
        "--quaero-config", dest="quaero_config", metavar="PATH",
        help="settings file in Quaero's TOML format ([queue], [storage.sqlite], [load_test], [thresholds]).",
    )
    group.addoption(
        "--quaero-threshold", dest="quaero_threshold", action="append", default=[], metavar="[SCENARIO.]KEY=VALUE",
        help="override a criterion threshold, e.g. medium.min_throughput=20 (repeatable).",
    )
    for spec in FIELDS:
        group.addoption(spec.option, dest=f"quaero_{spec.name}", metavar=spec.metavar,
                        help=f"{spec.help}. Env: {' or '.join(spec.env_names)}; ini: {spec.ini}.")
        _addini(parser, spec.ini or f"quaero_{spec.name}", f"{spec.help}. Env: {' or '.join(spec.env_names)}.",
                spec.ini_type)
        for old in spec.deprecated_ini:
            _addini(parser, old, f"deprecated name of {spec.ini}.", spec.ini_type)
    parser.addini(
        "quaero_thresholds", "criterion thresholds, one per line: [SCENARIO.]KEY = VALUE.", type="linelist", default=[]
    )
    _report_options(group)
    _gate_options(group)
    group.addoption(
        "--quaero-audit", dest="quaero_audit", metavar="PATH|DSN",
        help="audit an existing database (goqite table and/or crawl_jobs, e.g. one a Go service left "
        "behind) read-only: one test item per integrity criterion; the file is never changed. A "
        "postgresql://... DSN audits a goqite PostgreSQL database in a read-only transaction.",
    )
    group.addoption(
        "--quaero-shared-db", dest="quaero_shared_db", metavar="PATH",
        help="with pytest-xdist (-n N): every worker runs each scenario against this ONE SQLite file at "
        "the same time (real cross-process contention); criteria judge the merged result.",
    )


def _addini(parser: pytest.Parser, name: str, help: str, ini_type: str) -> None:
    try:
        parser.addini(name, help, type=ini_type, default=None)  # type: ignore[arg-type]
    except (AssertionError, ValueError):  # pytest < 8.4 has no int or float ini type
        parser.addini(name, help, default=None)


def _raw_ini(config: pytest.Config, name: str) -> Any:
    """The value as written: a string from an ini file or ``-o``, a native one from ``[tool.pytest]``.

    The settings parsers read it, not ``getini``'s conversion: ``int()`` takes ``'٣'``, ``' 3_0 '``
    and ``'+3'``, and an ini file's value would escape the checks every other source gets. The
    raw store is private to pytest (``_inicfg`` since 9.0, ``inicfg`` and ``-o`` before); where
    neither is found, ``getini`` it is.
    """
    store = getattr(config, "_inicfg", None)
    if isinstance(store, Mapping):  # pytest >= 9: ConfigValue entries, -o overrides among them
        entry = store.get(name)
        return None if entry is None else getattr(entry, "value", entry)
    override = getattr(config, "_get_override_ini_value", None)
    legacy = config.__dict__.get("inicfg")
    if callable(override) and isinstance(legacy, Mapping):  # pytest 8
        value = override(name)
        return value if value is not None else legacy.get(name)
    return config.getini(name)


def read_ini(config: pytest.Config) -> dict[str, Any]:
    """Every settings ini key that is set, by name (deprecated names included, with a warning)."""
    values: dict[str, Any] = {}
    for spec in FIELDS:
        for name in (spec.ini, *spec.deprecated_ini):
            if name is None:
                continue
            value = _raw_ini(config, name)
            if value is None:
                continue
            values[name] = value
            if name != spec.ini:
                config.issue_config_time_warning(pytest.PytestDeprecationWarning(
                    f"ini option {name} is deprecated: rename it {spec.ini} (same value, same meaning)."),
                    stacklevel=2)
    return values


def _report_options(group: pytest.OptionGroup) -> None:
    group.addoption(
        "--quaero-report", dest="quaero_report", metavar="PATH.md",
        help="write the team's load-test template, filled in from this session's measurements, to PATH.md.",
    )
    group.addoption(
        "--quaero-json", dest="quaero_json", metavar="PATH",
        help="write every metric, setting, verdict and timeline of this session as JSON (the baseline format).",
    )
    group.addoption(
        "--quaero-progress", dest="quaero_progress", default="auto", choices=PROGRESS_MODES,
        help="live progress per running scenario: auto (in-place line on a terminal, a plain line every "
        "10s otherwise, nothing under -q), live, plain or off. Default: auto.",
    )


def _gate_options(group: pytest.OptionGroup) -> None:
    group.addoption(
        "--quaero-save-baseline", dest="quaero_save_baseline", nargs="?", const="", default=None, metavar="PATH",
        help="store each scenario's result as its baseline (scenario + machine) in PATH "
        f"(default {DEFAULT_BASELINE_STORE}); give the value with '='.",
    )
    group.addoption(
        "--quaero-baseline", dest="quaero_baseline", metavar="PATH",
        help="compare each scenario with its baseline in PATH; with none there yet, record this run and warn.",
    )
    group.addoption(
        "--quaero-compare-fail", dest="quaero_compare_fail", action="append", default=[], metavar="EXPR[,EXPR]",
        help="fail quaero[...]::regression when a metric is worse than its baseline by more than this: "
        "throughput:10%%, p95:25%%, execution_time:20%%, retries:+50 (metrics: throughput, execution_time, p95, "
        "latency_p95, avg_processing_time, retries, busy_errors, redeliveries).",
    )
    group.addoption(
        "--quaero-require-baseline", dest="quaero_require_baseline", action="store_true", default=False,
        help="fail quaero[...]::regression when no baseline exists (instead of recording one).",
    )
    group.addoption(
        "--quaero-disable", dest="quaero_disable", metavar="FIX[,FIX]",
        help="turn lock fixes off for every run: wal, busy_timeout, retries, stagger, immediate (or all).",
    )
    group.addoption(
        "--quaero-compare-fixes", dest="quaero_compare_fixes", action="store_true", default=False,
        help="also run each scenario with all fixes off and with each fix off alone; report before/after.",
    )
    group.addoption(
        "--quaero-contention", dest="quaero_contention", metavar="SPEC",
        help="extra load from other processes, e.g. writer:hold=200ms,every=1s;reader:snapshot=5s;"
        "burst:producers=8,every=2s. Records WAL size and the final checkpoint.",
    )
    group.addoption(
        "--quaero-faults", dest="quaero_faults", metavar="SPEC",
        help="inject faults, e.g. kill-worker:after=25%%;kill-producer:parent=1,after=5;restart-pool:after=50%%; "
        "adds quaero[...]::fault_recovery.",
    )
