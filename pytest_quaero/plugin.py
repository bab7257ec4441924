"""pytest-quaero's pytest wiring: options, marker, fixtures, hooks. No logic of its own.

Settings are resolved by :mod:`.core.settings`, the session state lives on one
:class:`~pytest_quaero.session.QuaeroSession`, items come from :mod:`.items`, runs
from the pytest-free :mod:`.core` pipeline and the reports from :mod:`.report`.
Those are imported only when a scenario (or a report, the gate, the audit, xdist)
is asked for, so an installed but unused plugin costs one small import.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_quaero import defaults, hookspecs
from pytest_quaero.core.scenarios import Scenario, check_stagger
from pytest_quaero.core.settings import FIELDS, Settings, SettingsError, resolve
from pytest_quaero.fixtures import (  # noqa: F401 - fixtures are found on the plugin module
    quaero_db,
    quaero_pool,
    quaero_queue,
    quaero_run,
    quaero_settings,
    quaero_store,
)
from pytest_quaero.markers import MARKER, check_marker_names, known_scenarios, scenario_from_marker
from pytest_quaero.options import add_options, read_ini
from pytest_quaero.session import SESSION_KEY, QuaeroSession, session_of

_GATE_OPTIONS = ("save_baseline", "baseline", "compare_fail", "require_baseline", "disable", "compare_fixes",
                 "contention", "faults", "shared_db")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)
    if pluginmanager.get_plugin(defaults.DEFAULTS_NAME) is None:
        pluginmanager.register(defaults, defaults.DEFAULTS_NAME)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _resolve_settings(config: pytest.Config) -> Settings:
    ini_name = Path(str(config.inipath)).name if config.inipath else "ini file"
    cli = {spec.name: config.getoption(f"quaero_{spec.name}") for spec in FIELDS}
    ini = read_ini(config)
    return resolve(
        cli, os.environ, ini,
        config_file=config.getoption("quaero_config"),
        ini_name=ini_name,
        threshold_cli=config.getoption("quaero_threshold"),
        threshold_ini=config.getini("quaero_thresholds"),
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    try:
        session = QuaeroSession(config, _resolve_settings(config))
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "quaero-session")
    try:
        _choose_scenarios(config, session)
        _configure_gate(config, session)
    except ValueError as exc:  # SettingsError included
        raise pytest.UsageError(str(exc)) from None
    from pytest_quaero.report.outputs import configure as configure_reports  # deferred: start-up cost

    configure_reports(config, session)
    _configure_audit_and_xdist(config, session)
    _check_files(config, session)


def _check_audit_alone(config: pytest.Config) -> None:
    """An audit reads a database someone else wrote, a scenario run writes its own: one per session."""
    audit, chosen = config.getoption("quaero_audit"), config.getoption("quaero_scenario")
    if audit and chosen is not None:
        from pytest_quaero.core.audit import audit_label  # deferred: only this refusal needs it

        raise ValueError(f"--quaero-audit={audit_label(audit)} cannot be combined with --quaero-scenario={chosen}: "
                         "an audit reads an existing database, a scenario run makes its own; run them separately "
                         "(two pytest commands).")


def _choose_scenarios(config: pytest.Config, session: QuaeroSession) -> None:
    _check_audit_alone(config)
    chosen = config.getoption("quaero_scenario")
    settings = session.settings
    if chosen is None and not settings.thresholds:
        return
    # deferred: criteria are needed only when scenarios or thresholds were asked for
    from pytest_quaero.core.criteria import check_threshold_scopes, thresholds_for
    from pytest_quaero.core.scenarios import parse_scenarios

    known = known_scenarios(config)  # built-in + pytest_quaero_scenarios
    if chosen is not None:
        session.scenarios = parse_scenarios(chosen, known)
    check_threshold_scopes(settings.thresholds, known)
    for scenario in session.scenarios or known.values():
        thresholds_for(scenario, settings.thresholds, settings.threshold_sources)


def _configure_gate(config: pytest.Config, session: QuaeroSession) -> None:
    """The gate, then every chosen scenario checked against what will run: the settings after
    ``--quaero-disable``, each scenario with its time limit (``max_execution_time``)."""
    runs: list[Scenario] = []
    if session.scenarios:
        from pytest_quaero.core.criteria import thresholds_for  # deferred: only a scenario session needs criteria

        settings = session.settings
        runs = [replace(scenario, time_limit=thresholds_for(scenario, settings.thresholds).max_execution_time)
                for scenario in session.scenarios]
    values = {name: config.getoption(f"quaero_{name}", None) for name in _GATE_OPTIONS}
    if any(value not in (None, False, []) for name, value in values.items() if name != "shared_db"):
        from pytest_quaero.core.gate import GateOptions, gate_from_options  # deferred: baselines, faults, fixes

        values["compare_fail"] = tuple(values["compare_fail"] or ())
        gate, session.settings, warnings = gate_from_options(GateOptions(**values), Path(str(config.rootpath)),
                                                             session.settings, runs)
        session.gate = gate
        for message in warnings:
            config.issue_config_time_warning(pytest.PytestConfigWarning(message), stacklevel=2)
    for run in runs:
        check_stagger(session.settings, run)


def _configure_audit_and_xdist(config: pytest.Config, session: QuaeroSession) -> None:
    audit_path = config.getoption("quaero_audit")
    if audit_path:
        from pytest_quaero.audit import AuditPlugin  # deferred: only an audit needs it

        config.pluginmanager.register(AuditPlugin.from_config(config, audit_path, session.settings), "quaero-audit")
    # Registered only when pytest-xdist is there (and not disabled with -p no:xdist) and this
    # session distributes (or asks for --quaero-shared-db, to say what is missing).
    distributing = config.getoption("dist", "no") != "no" or hasattr(config, "workerinput")
    if config.pluginmanager.hasplugin("xdist") and (distributing or config.getoption("quaero_shared_db")):
        from pytest_quaero.xdist import configure as configure_xdist  # deferred: only a distributing session

        configure_xdist(config, session)
    elif config.getoption("quaero_shared_db"):
        raise pytest.UsageError(
            f"--quaero-shared-db={config.getoption('quaero_shared_db')}: needs pytest-xdist workers; "
            "install pytest-xdist and add -n N (N >= 1), or use --quaero-db=PATH for one process."
        )


#: options under which no test runs: the files are not opened (nor locked)
_NOTHING_RUNS = ("help", "version", "markers", "showfixtures", "show_fixtures_per_test", "collectonly")


def _check_files(config: pytest.Config, session: QuaeroSession) -> None:
    """The database and baseline files, checked once before any item runs: a usage error naming
    the file, the cause and what to do. Holds the --quaero-db file's run lock until the session ends.

    The process that starts the session checks (xdist workers could only crash on a usage
    error): under xdist, the file each worker will run on.
    """
    if hasattr(config, "workerinput"):
        return
    if any(config.getoption(name, False) for name in _NOTHING_RUNS):
        return  # --help, --markers, --fixtures, --collect-only (IDE discovery while a run goes on) open no file
    settings, gate = session.settings, session.gate
    if session.scenarios and settings.backend == "postgresql" and settings.dsn:
        _check_server(settings)
    if settings.db_path:
        # deferred: only a session with a --quaero-db file opens it now
        from pytest_quaero.core.dbfile import DatabaseFileError, open_for_session

        checked = [settings.db_path]
        workers = len(config.getoption("tx", None) or ()) if config.getoption("dist", "no") != "no" else 0
        if workers:
            from pytest_quaero.xdist.wiring import worker_db_path  # deferred: only a distributing session

            # the named path too: a device or FIFO there says the value is wrong, whatever the workers use
            checked += [worker_db_path(settings.db_path, f"gw{n}") for n in range(workers)]
        source = settings.sources.get("db_path", "command line")
        source = "the command line" if source == "command line" else source
        try:
            lock = open_for_session(settings.db_path, checked, settings,
                                    command=" ".join(["pytest", *map(str, config.invocation_params.args)]))
        except DatabaseFileError as exc:
            raise pytest.UsageError(f"--quaero-db={settings.db_path} (from {source}): {exc}") from None
        config.add_cleanup(lock.release)
    if gate is not None and gate.wants_baseline:
        from pytest_quaero.core.baseline import BaselineError, BaselineStore  # deferred: only the gate's files

        option = "--quaero-baseline" if config.getoption("quaero_baseline", None) else "--quaero-compare-fail"
        for name, path, saving in (("--quaero-save-baseline", gate.save_path, True),
                                   (option, gate.compare_path, False)):
            if path is None:
                continue
            store = BaselineStore(path)
            try:
                # a compare store that does not exist yet is written: the run is recorded as its baseline
                store.check(writing=saving or not store.path.exists())
            except BaselineError as exc:
                raise pytest.UsageError(f"{name}: {exc}") from None


def _check_server(settings: Settings) -> None:
    """The --quaero-dsn server, before any item: unreachable, refused, too old or no CREATE is a usage error."""
    from pytest_quaero.core.postgresql.server import ServerError, check_dsn  # deferred: imports psycopg

    source = settings.sources.get("dsn", "command line")
    try:
        check_dsn(str(settings.dsn), "the command line" if source == "command line" else source)
    except ServerError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    session = session_of(config)
    if not session.scenarios:
        return None
    s = session.settings
    if s.backend == "postgresql":  # the same setting is lock_timeout there, and there is no journal
        from pytest_quaero.core.postgresql import redact_dsn  # deferred: a SQLite session never imports it

        database = (f"postgresql {redact_dsn(s.dsn)}" if s.dsn else "postgresql (embedded server)") + \
            f", lock_timeout {s.describe('busy_timeout_ms')}"
    else:
        database = f"busy_timeout {s.describe('busy_timeout_ms')}, journal {'WAL' if s.wal else 'DELETE'}"
    return [
        f"quaero: scenarios {', '.join(sc.name for sc in session.scenarios)}; {s.workers} workers ({s.worker_mode}), "
        f"stagger {s.describe('stagger')}, {database}, retries {s.retry_attempts}x{s.describe('retry_backoff')}, "
        f"seed {s.seed}"
    ]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: our items join before -k / -m deselection, so those select them too.
    check_marker_names(config, items)
    for item in items:
        marker = item.get_closest_marker("quaero_scenario")
        if marker is not None:
            scenario_from_marker(config, marker.args, marker.kwargs,
                                 where=f"@pytest.mark.quaero_scenario on {item.nodeid}")
    current = session_of(config)
    if current.scenarios:
        from pytest_quaero.items import make_scenario_nodes  # deferred: only a scenario session needs items

        make_nodes = current.make_scenario_nodes or make_scenario_nodes
        items.extend(make_nodes(session, current.scenarios, current.harness))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    current = config.stash.get(SESSION_KEY, None)
    if current is None or not current.results:
        return
    from pytest_quaero.report.terminal import gate_summary_lines, write_summary  # deferred: results only

    write_summary(terminalreporter, current.results)
    gate_lines = [line for result in current.results for line in gate_summary_lines(result)]
    if gate_lines:
        terminalreporter.write_sep("-", "quaero regression gate")
        for line in gate_lines:
            terminalreporter.write_line(line)
