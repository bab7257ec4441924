"""Wires the reports into a pytest session: options, when each file is written, JUnit, CI summary.

* ``--quaero-report=PATH.md`` (:mod:`.report_md`) and ``--quaero-json=PATH``
  (:mod:`.results_json`) are written once, at session finish, by the process that saw
  every test report (the xdist controller, or the only process), from
  ``state(config).results``: the results that travelled on those reports.
* With ``$GITHUB_STEP_SUMMARY`` set, the criteria tables are appended to that file.
* JUnit (``--junitxml``): every metric of a run is a ``<property>`` named
  ``quaero_<scenario>_<metric>`` (one scheme, like the criterion items' ``quaero_status``).
  A scenario's run belongs to no single criterion item, so its metrics are properties of
  the test suite; a ``quaero_run()`` result's are properties of the test that called it.
* The pytest-html integration (:mod:`.report_html`) is registered only when pytest-html
  is active, and the progress line (:mod:`.progress`) only where it can be seen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.session import QuaeroSession

__all__ = ["ReportOptions", "ReportsPlugin", "configure", "junit_properties"]

@dataclass(frozen=True)
class ReportOptions:
    markdown: Path | None = None
    json: Path | None = None
    progress: str = "auto"
    step_summary: Path | None = None


def _output_path(config: pytest.Config, option: str) -> Path | None:
    raw = config.getoption(option)
    if raw is None or raw == "":
        return None
    spelled = f"--{option.replace('_', '-')}={raw}"
    path = Path(os.path.expandvars(str(raw))).expanduser()
    if not path.is_absolute():
        path = Path(config.invocation_params.dir) / path
    if path.is_dir():
        raise pytest.UsageError(f"{spelled}: is a directory; give a file path such as results/quaero.md.")
    # deferred: only a session that asked for a report file checks where it goes
    from pytest_quaero.core.files import output_problem

    problem = output_problem(path)
    if problem is not None:
        raise pytest.UsageError(f"{spelled}: {problem}; nothing would be written there.")
    return path


def options_from(config: pytest.Config) -> ReportOptions:
    summary = os.environ.get("GITHUB_STEP_SUMMARY", "").strip()
    return ReportOptions(
        markdown=_output_path(config, "quaero_report"),
        json=_output_path(config, "quaero_json"),
        progress=config.getoption("quaero_progress") or "auto",
        step_summary=Path(summary) if summary else None,
    )


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def configure(config: pytest.Config, current: QuaeroSession) -> None:
    """Register the report machinery this session needs (called from the plugin's pytest_configure)."""
    options = options_from(config)
    config.pluginmanager.register(ReportsPlugin(config, current, options), "quaero-reports")
    if config.pluginmanager.hasplugin("html") and config.getoption("htmlpath", None) and not is_worker(config):
        # pytest-html's hooks exist only when it is installed; a class registered only then
        # keeps pytest from rejecting them as unknown (see pytest's "optionally using hooks").
        from pytest_quaero.report.html import HtmlIntegration

        config.pluginmanager.register(HtmlIntegration(config, current), "quaero-html")


def junit_properties(result: RunResult) -> list[tuple[str, Any]]:
    """``("quaero_light_throughput", 381.2)`` for every metric of ``result``, and its verdict."""
    # deferred: report machinery, loaded only when there is something to report
    from pytest_quaero.core.results_json import metrics_of

    prefix = f"quaero_{result.scenario}_"
    properties: list[tuple[str, Any]] = [(prefix + "status", "PASS" if result.passed else "FAIL")]
    # per-operation and per-worker figures are named 'attempts_per_operation.save_job': one separator
    properties += [(prefix + name.replace(".", "_"), value) for name, value in metrics_of(result).items()]
    return properties


def _from_quaero_run(data: dict[str, Any]) -> bool:
    """A result ``quaero_run()`` returned to a test (``extra.origin`` names the test), not a scenario item's."""
    extra = data.get("extra")
    return isinstance(extra, dict) and bool(extra.get("origin"))


def _junit_xml(config: pytest.Config) -> Any:
    """The session's ``--junitxml`` writer, or None (none asked for, or an xdist worker)."""
    try:
        from _pytest.junitxml import xml_key  # the only handle on the writer a plugin has
    except ImportError:  # pragma: no cover - a pytest that moved it: the suite properties are left out
        return None
    return config.stash.get(xml_key, None)


@dataclass(eq=False)  # registered as a pytest plugin, which must stay hashable
class ReportsPlugin:
    """Session hooks for the Markdown/JSON files, the CI summary, JUnit properties and progress."""

    config: pytest.Config
    state: QuaeroSession
    options: ReportOptions
    started: float = field(default_factory=time.time)
    written: list[str] = field(default_factory=list)
    #: requested files that could not be written: the session fails
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    progress_mode: str = "off"
    progress_installed: bool = False
    #: scenarios whose start the xdist controller announced
    announced: set[str] = field(default_factory=set)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.started = time.time()
        # deferred: report machinery, loaded only when there is something to report
        from pytest_quaero.report.progress import choose_mode

        terminal = self.config.pluginmanager.getplugin("terminalreporter")
        self.progress_mode = choose_mode(
            self.options.progress,
            verbosity=self.config.get_verbosity(),
            isatty=bool(getattr(terminal, "isatty", False)),
            live_logging=bool(self.config.getoption("log_cli_level", None) or self.config.getini("log_cli")),
            worker=is_worker(self.config),
        )

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        # Hooked in only when a test is about to run a scenario (a criterion item's setup runs
        # the load; quaero_run runs it in the test): touching the harness imports the run
        # machinery, which a session that runs no scenario must never pay for.
        if self.progress_installed or self.progress_mode == "off":
            return
        if self.state.scenarios or "quaero_run" in getattr(item, "fixturenames", ()):
            # deferred: report machinery, loaded only when there is something to report
            from pytest_quaero.report.progress import install

            install(self.config, self.state.harness, self.progress_mode)
            self.progress_installed = True

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        # Under xdist a scenario's progress stays on its worker: the controller says it started.
        if self.progress_mode == "off" or is_worker(self.config) or self.config.getoption("dist", "no") == "no":
            return
        # deferred: report machinery, loaded only when there is something to report
        from pytest_quaero.report.progress import announce

        terminal = self.config.pluginmanager.getplugin("terminalreporter")
        if terminal is not None:
            announce(terminal, nodeid, self.state.scenarios, self.announced)

    # tryfirst makes this the outermost wrapper, so it runs after the plugin's own wrapper has
    # put the carried results on the report.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report = yield
        carried = [data for data in getattr(report, "quaero_results", None) or () if _from_quaero_run(data)]
        if carried:
            # deferred: report machinery, loaded only when there is something to report
            from pytest_quaero.core.metrics import RunResult

            for data in carried:
                properties = junit_properties(RunResult.from_dict(data))
                # the item's list feeds the teardown report, which is the one junitxml reads;
                # the report's own copy serves tools that read the call report
                item.user_properties.extend(properties)
                report.user_properties.extend(properties)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # A scenario's metrics go on the suite: whichever criterion item ran the load (the first
        # one -k left) is no place for them. Here, where the reports of every xdist worker arrive.
        carried = [data for data in getattr(report, "quaero_results", None) or () if not _from_quaero_run(data)]
        xml = _junit_xml(self.config) if carried else None
        if xml is None:
            return
        # deferred: report machinery, loaded only when there is something to report
        from pytest_quaero.core.metrics import RunResult

        for data in carried:
            for name, value in junit_properties(RunResult.from_dict(data)):
                xml.add_global_property(name, value)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if is_worker(self.config):
            return  # the controller writes, from the results every worker's reports carried
        results = list(self.state.results)
        context: dict[str, Any] = {}
        if self.options.json is not None:
            self._write("JSON results", self.options.json, lambda: self._json(results, exitstatus, context))
        if self.options.markdown is not None:
            self._write("Markdown report", self.options.markdown, lambda: self._markdown(results, context))
        if self.errors and session.exitstatus == pytest.ExitCode.OK:
            # a CI step that reads the file must not find a green run and no file
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.options.step_summary is not None and results:
            try:
                # deferred: report machinery, loaded only when there is something to report
                from pytest_quaero.report.markdown import step_summary

                with open(self.options.step_summary, "a", encoding="utf-8") as handle:
                    handle.write(step_summary(results))
                self.written.append(f"summary appended to $GITHUB_STEP_SUMMARY ({self.options.step_summary})")
            except OSError as exc:
                # not a file this session asked for (the CI sets it): said, but the session does not fail
                self.warnings.append(f"could not append to $GITHUB_STEP_SUMMARY {self.options.step_summary}: {exc}")

    def _write(self, what: str, path: Path, produce: Any) -> None:
        try:
            produce()
            self.written.append(f"{what} written to {path}")
        except OSError as exc:
            self.errors.append(f"could not write the {what} to {path}: {exc}")

    def _context(self, context: dict[str, Any]) -> dict[str, Any]:
        """Machine, commit and versions, found once per session and shared by both files."""
        if not context:
            # deferred: report machinery, loaded only when there is something to report
            from pytest_quaero.core.results_json import commit_info, machine_info, versions

            context.update(machine=machine_info(), commit=commit_info(self.config.rootpath), versions=versions())
        return context

    def _json(self, results: list[RunResult], exitstatus: int, context: dict[str, Any]) -> None:
        # deferred: report machinery, loaded only when there is something to report
        from pytest_quaero.core.results_json import build_document, write_atomic

        ctx = self._context(context)
        settings = self.state.settings
        document = build_document(
            results,
            commit=ctx["commit"],
            session={
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
                "duration": round(time.time() - self.started, 6),
                "exitstatus": int(exitstatus),
                "scenarios": [scenario.name for scenario in self.state.scenarios],
                "args": [_redacted(str(arg)) for arg in self.config.invocation_params.args],
                "xdist_workers": _xdist_workers(self.config),
                "passed": bool(results) and all(result.passed for result in results),
            },
            settings={
                "values": settings.as_dict(),
                "sources": dict(settings.sources),
                "thresholds": {scope: dict(values) for scope, values in settings.thresholds.items()},
            },
        )
        write_atomic(self.options.json, document)  # type: ignore[arg-type]

    def _markdown(self, results: list[RunResult], context: dict[str, Any]) -> None:
        # deferred: report machinery, loaded only when there is something to report
        from pytest_quaero.report.markdown import ReportContext, render

        ctx = self._context(context)
        text = render(ReportContext(
            results=results, settings=self.state.settings, created=self.started, machine=ctx["machine"],
            commit=ctx["commit"], versions=ctx["versions"], session_duration=time.time() - self.started,
            json_path=str(self.options.json) if self.options.json is not None else None,
        ))
        # deferred: report machinery, loaded only when there is something to report
        from pytest_quaero.core.results_json import write_text_atomic

        write_text_atomic(self.options.markdown, text)  # type: ignore[arg-type]

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.written:
            terminalreporter.write_line(f"quaero: {line}")
        for line in self.warnings:
            terminalreporter.write_line(f"quaero: {line}", yellow=True)
        for line in self.errors:
            terminalreporter.write_line(f"quaero: {line}", red=True, bold=True)
        if self.errors:
            terminalreporter.write_line("quaero: the session fails: a file it was asked to write is missing",
                                        red=True, bold=True)
        if (self.options.markdown or self.options.json) and not self.state.results and not is_worker(self.config):
            terminalreporter.write_line(
                "quaero: no scenario ran in this session, so the reports say 'not measured' throughout "
                "(run with --quaero-scenario=light|medium|heavy|all)", yellow=True)


def _xdist_workers(config: pytest.Config) -> int:
    numprocesses = getattr(config.option, "numprocesses", None)
    return int(numprocesses) if isinstance(numprocesses, int) else 0


def _redacted(arg: str) -> str:
    """A command-line argument as the JSON keeps it: a DSN's password never leaves the machine."""
    from pytest_quaero.core.postgresql import redact_dsn  # deferred: standard library only, needed here alone

    option, sep, value = arg.partition("=")
    if sep and option.startswith("--"):
        return f"{option}={redact_dsn(value)}"
    return redact_dsn(arg)
