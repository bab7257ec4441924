"""pytest-quaero's pytest wiring: options, ini keys, marker, fixtures, hooks.

No logic of its own lives here: settings are resolved by :mod:`.settings`, runs
happen in :mod:`.harness`, items come from :mod:`.items`, and the table printed at
the end from :mod:`.summary`. Those are imported only when a scenario is chosen,
so an installed but unused plugin costs one small import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_quaero.fixtures import quaero_db, quaero_pool, quaero_queue, quaero_run, quaero_settings, quaero_store  # noqa: F401
from pytest_quaero.core.settings import FIELDS, Settings, SettingsError, resolve

if TYPE_CHECKING:
    from pytest_quaero.core.harness import Harness
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.core.scenarios import Scenario

MARKER = (
    "quaero_scenario(name=None, *, parents=None, children=None, time_limit=None, **settings): "
    "the load scenario quaero_run() runs in this test: a name (light, medium, heavy) or a custom "
    "parents x children tree; keyword settings (workers=4, stagger='100ms', ...) override the session's."
)


@dataclass
class QuaeroState:
    """Per-session state, kept in ``config.stash``."""

    config: pytest.Config
    settings: Settings
    scenarios: list[Scenario] = field(default_factory=list)
    #: every judged result that reached this process on a test report (under xdist, the
    #: controller gets them all); the summary and reports read these, never worker memory
    results: list[RunResult] = field(default_factory=list)
    _harness: Harness | None = None

    @property
    def harness(self) -> Harness:
        if self._harness is None:
            from pytest_quaero.core.harness import Harness

            factory = getattr(self.config, "_tmp_path_factory", None)
            self._harness = Harness(
                self.settings, make_base_dir=(lambda: factory.mktemp("quaero", numbered=True)) if factory else None
            )
        return self._harness


STATE_KEY = pytest.StashKey[QuaeroState]()


def state(config: pytest.Config) -> QuaeroState:
    return config.stash[STATE_KEY]


# ---------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
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
        group.addoption(spec.option, dest=f"quaero_{spec.name}", metavar=spec.metavar, help=spec.help + ".")
        parser.addini(spec.ini or f"quaero_{spec.name}", spec.help + ".", default=None)
    parser.addini(
        "quaero_thresholds", "criterion thresholds, one per line: [SCENARIO.]KEY = VALUE.", type="linelist", default=[]
    )
    _add_report_options(group)
    _add_gate_options(group)
    _add_extension_options(group, parser)


def _resolve_settings(config: pytest.Config) -> Settings:
    ini_name = Path(str(config.inipath)).name if config.inipath else "ini file"
    cli = {spec.name: config.getoption(f"quaero_{spec.name}") for spec in FIELDS}
    ini = {spec.ini: config.getini(spec.ini) for spec in FIELDS if spec.ini}
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
        settings = _resolve_settings(config)
        scenarios: list[Scenario] = []
        chosen = config.getoption("quaero_scenario")
        if chosen is not None or settings.thresholds:
            from pytest_quaero.core.criteria import check_threshold_scopes, thresholds_for
            from pytest_quaero.extension import known_scenarios
            from pytest_quaero.core.scenarios import parse_scenarios

            known = known_scenarios(config)  # built-in + pytest_quaero_scenarios
            if chosen is not None:
                scenarios = parse_scenarios(chosen, known)
            check_threshold_scopes(settings.thresholds, known)
            for scenario in scenarios or known.values():
                thresholds_for(scenario, settings.thresholds, settings.threshold_sources)
    except (SettingsError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE_KEY] = current = QuaeroState(config, settings, scenarios)
    config.pluginmanager.register(ResultCollector(current), "quaero-results")
    _configure_reports(config, current)
    _configure_gate(config, current)
    _configure_extensions(config, current)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    current = state(config)
    if not current.scenarios:
        return None
    s = current.settings
    return [
        f"quaero: scenarios {', '.join(sc.name for sc in current.scenarios)}; {s.workers} workers ({s.worker_mode}), "
        f"stagger {s.describe('stagger')}, busy_timeout {s.describe('busy_timeout_ms')}, retries "
        f"{s.retry_attempts}x{s.describe('retry_backoff')}, journal {'WAL' if s.wal else 'DELETE'}, "
        f"seed {s.seed}"
    ]


# ---------------------------------------------------------------- marker


def scenario_from_marker(
    config: pytest.Config, args: tuple[Any, ...], kwargs: dict[str, Any], *, where: str
) -> tuple[Scenario, Settings]:
    """The scenario and settings a ``quaero_scenario`` marker (or quaero_run call) asks for."""
    from pytest_quaero.extension import known_scenarios
    from pytest_quaero.core.scenarios import Scenario

    kwargs = dict(kwargs)
    if len(args) > 1:
        raise pytest.UsageError(f"{where}: takes at most one scenario name, got {args!r}.")
    name = args[0] if args else kwargs.pop("name", None)
    parents, children = kwargs.pop("parents", None), kwargs.pop("children", None)
    time_limit = kwargs.pop("time_limit", None)
    try:
        known = known_scenarios(config)  # built-in + pytest_quaero_scenarios
        if isinstance(name, Scenario):
            scenario = name
        elif name is not None and (parents is None and children is None):
            if str(name) not in known:
                raise ValueError(f"unknown scenario {name!r}; allowed: {', '.join(known)}")
            scenario = known[str(name)]
        else:
            base = known.get(str(name)) if name is not None else None
            scenario = Scenario(
                str(name or "custom"),
                int(parents if parents is not None else (base.parents if base else 1)),
                int(children if children is not None else (base.children if base else 1)),
                float(base.time_limit if base else 300.0),
            )
        if time_limit is not None:
            from dataclasses import replace

            from pytest_quaero.core.settings import parse_duration

            seconds = float(time_limit) if isinstance(time_limit, (int, float)) else parse_duration(str(time_limit))
            scenario = replace(scenario, time_limit=seconds)
        settings = state(config).settings
        if kwargs:
            settings = settings.replace(source=where, **kwargs)
    except SettingsError as exc:  # already names the marker as its source
        raise pytest.UsageError(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise pytest.UsageError(f"{where}: {exc}") from None
    return scenario, settings


# ---------------------------------------------------------------- collection


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: our items join before -k / -m deselection, so those select them too.
    for item in items:
        marker = item.get_closest_marker("quaero_scenario")
        if marker is not None:
            scenario_from_marker(config, marker.args, marker.kwargs,
                                 where=f"@pytest.mark.quaero_scenario on {item.nodeid}")
    current = state(config)
    if current.scenarios:
        from pytest_quaero.items import make_scenario_nodes

        # --quaero-shared-db swaps in shard and judge nodes (xdist_support)
        make_nodes = config.stash.get(SCENARIO_NODES_KEY, make_scenario_nodes)
        items.extend(make_nodes(session, current.scenarios, current.harness))


# ---------------------------------------------------------------- results travel on reports

RESULTS_KEY = pytest.StashKey[list]()


def carry_result(item: pytest.Item, result: RunResult) -> None:
    """Have ``result`` ride on ``item``'s call report (as a dict, so xdist can ship it)."""
    item.stash.setdefault(RESULTS_KEY, []).append(result.to_dict())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    carried = item.stash.get(RESULTS_KEY, None)
    if carried and report.when in ("call", "setup") and (report.when == "call" or report.failed):
        report.quaero_results = carried
        item.stash[RESULTS_KEY] = []
    return report


class ResultCollector:
    """Gathers the results riding on test reports; on an xdist controller, from every worker."""

    def __init__(self, state: QuaeroState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        carried = getattr(report, "quaero_results", None)
        if carried:
            from pytest_quaero.core.metrics import RunResult

            self.state.results.extend(RunResult.from_dict(data) for data in carried)


# ---------------------------------------------------------------- summary


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    current = config.stash.get(STATE_KEY, None)
    if current is None or not current.results:
        return
    from pytest_quaero.report.terminal import write_summary

    write_summary(terminalreporter, current.results)


# ---------------------------------------------------------------- reports (Markdown, HTML, JSON, progress)


def _add_report_options(group: Any) -> None:
    from pytest_quaero.report.outputs import add_options

    add_options(group)


def _configure_reports(config: pytest.Config, current: QuaeroState) -> None:
    from pytest_quaero.report.outputs import configure

    configure(config, current)


# ---------------------------------------------------------------- regression gate (baselines, fixes, faults)


def _add_gate_options(group: Any) -> None:
    from pytest_quaero.gate import add_options

    add_options(group)


def _configure_gate(config: pytest.Config, current: QuaeroState) -> None:
    from pytest_quaero.gate import configure

    # --quaero-disable turns fixes off in the session's settings (items and quaero_run alike).
    _, current.settings = configure(config, current.settings)


# ---------------------------------------------------------------- extension hooks, audit, xdist


#: set by xdist_support under --quaero-shared-db: makes shard + judge nodes instead of plain ones
SCENARIO_NODES_KEY = pytest.StashKey[Any]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    # The pytest_quaero_* hookspecs and their trylast defaults (pytest_quaero.defaults).
    from pytest_quaero.extension import register

    register(pluginmanager)


def _add_extension_options(group: Any, parser: pytest.Parser) -> None:
    group.addoption(
        "--quaero-audit", dest="quaero_audit", metavar="PATH",
        help="audit an existing database (goqite table and/or crawl_jobs, e.g. one a Go service left "
        "behind) read-only: one test item per integrity criterion; the file is never changed.",
    )
    group.addoption(
        "--quaero-shared-db", dest="quaero_shared_db", metavar="PATH",
        help="with pytest-xdist (-n N): every worker runs each scenario against this ONE SQLite file at "
        "the same time (real cross-process contention); criteria judge the merged result.",
    )


def _configure_extensions(config: pytest.Config, current: QuaeroState) -> None:
    audit_path = config.getoption("quaero_audit")
    if audit_path:
        from pytest_quaero.audit import AuditPlugin

        config.pluginmanager.register(AuditPlugin.from_config(config, audit_path, current.settings), "quaero-audit")
    # Registered only when pytest-xdist is there (and not disabled with -p no:xdist) and this
    # session distributes: importing xdist's scheduler costs ~140 ms of every plain start-up.
    distributing = config.getoption("dist", "no") != "no" or hasattr(config, "workerinput")
    if config.pluginmanager.hasplugin("xdist") and (distributing or config.getoption("quaero_shared_db")):
        from pytest_quaero.xdist.support import configure as configure_xdist

        configure_xdist(config, current, SCENARIO_NODES_KEY)
    elif config.getoption("quaero_shared_db"):
        raise pytest.UsageError(
            f"--quaero-shared-db={config.getoption('quaero_shared_db')}: needs pytest-xdist workers; "
            "install pytest-xdist and add -n N (N >= 1), or use --quaero-db=PATH for one process."
        )
