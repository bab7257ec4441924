"""The regression gate around each ``--quaero-scenario`` run: baselines, fixes, contention, faults.

:func:`configure` turns the gate's options into a :class:`Gate` (or ``None`` when none
was given) kept in ``config.stash``. A scenario node asks it for extra items
(``quaero[light]::regression``, ``quaero[light]::fault_recovery``) and lets it run the
scenario: contention loads and fault injectors ride along the run, the before/after
variants follow it, and the baseline is compared (and saved) before any item reports.
Failures reach pytest as failing items with a table, never as exceptions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_quaero.core.settings import DEFAULT_BASELINE_STORE

if TYPE_CHECKING:
    from pytest_quaero.core.baseline import CompareRule
    from pytest_quaero.core.harness import Harness
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.core.scenarios import Scenario
    from pytest_quaero.core.settings import Settings

__all__ = ["GATE_KEY", "BaselineWarning", "Gate", "add_options", "configure"]


class BaselineWarning(pytest.PytestWarning):
    """No baseline to compare with yet (it was recorded instead), or it could not be saved."""


@dataclass
class Gate:
    """What the gate options asked for, validated."""

    rootpath: Path
    save_path: Path | None = None
    compare_path: Path | None = None
    rules: list[CompareRule] = field(default_factory=list)
    require_baseline: bool = False
    disabled: list[str] = field(default_factory=list)
    compare_fixes: bool = False
    contention: str | None = None
    faults: str | None = None
    machine: str = ""

    @property
    def wants_baseline(self) -> bool:
        return self.save_path is not None or self.compare_path is not None

    # --- items

    def extra_items(self, node: Any) -> list[pytest.Item]:
        from pytest_quaero.items import CriterionItem
        from pytest_quaero.regression_item import RegressionItem

        items: list[pytest.Item] = []
        if self.faults:
            items.append(CriterionItem.from_parent(node, name="fault_recovery"))
        if self.wants_baseline:
            items.append(RegressionItem.from_parent(node, name="regression"))
        return items

    # --- the run

    def _disturbances(self, scenario: Scenario) -> list[Any]:
        if not self.contention:
            return []
        from pytest_quaero.core.contention import ContentionLoad

        load = ContentionLoad.from_spec(self.contention)
        load.prepare()  # spawned now, so interpreter start-up is not part of the run's time
        return [load]

    def run(self, harness: Harness, scenario: Scenario, extensions: Any = None) -> RunResult:
        """Run ``scenario`` with the gate's loads and faults, then fixes, recovery and baseline.

        ``extensions`` (the node's :class:`~pytest_quaero.extension.Extensions`) supply the
        user's own handler and queue/store; the fault injectors wrap those, never replace them.
        """
        from pytest_quaero.core.pool import open_endpoint

        settings = harness.settings
        handler = extensions.handler(settings) if extensions is not None else None
        endpoint_factory = extensions.endpoint_factory(settings) if extensions is not None else open_endpoint
        options: dict[str, Any] = {"handler": handler, "endpoint_factory": endpoint_factory}
        disturbances = self._disturbances(scenario)
        plan = None
        if self.faults:
            from pytest_quaero.core.faults import FaultPlan

            plan = FaultPlan.from_spec(self.faults, total_jobs=scenario.total_jobs, children=scenario.children)
            options.update(handler=plan.handler(handler, settings),
                           endpoint_factory=plan.endpoint_factory(endpoint_factory), pool_factory=plan.pool_factory())
            disturbances.append(plan)
        if disturbances:
            options["disturbances"] = disturbances
        try:
            result = harness.run(scenario, extensions=extensions, finalize=False, **options)
        finally:
            for disturbance in disturbances:  # also when the run failed before starting them
                disturbance.close()
        if self.disabled:
            result.extra["disabled_fixes"] = list(self.disabled)
        if plan is not None:
            result.verdicts.append(result.extra["faults"]["verdict"])
        if self.compare_fixes:
            from pytest_quaero.core.fixes import compare_fixes

            def variant_options() -> dict[str, Any]:
                # the same handler, queue/store and contention as the judged run; no faults
                variant: dict[str, Any] = {"handler": handler, "endpoint_factory": endpoint_factory}
                if self.contention:
                    variant["disturbances"] = self._disturbances(scenario)
                return variant

            compare_fixes(result, scenario, settings, thresholds=harness.thresholds(scenario),
                          run_options=variant_options, work_dir=Path(result.log_path).parent / "fix-variants")
        if self.wants_baseline:
            result.verdicts.append(self._baseline(result))
        # only now: a regression or failed recovery must keep the files and reach the observers
        harness.finalize(result, settings, extensions)
        return result

    # --- baselines

    def _baseline(self, result: RunResult) -> dict[str, Any]:
        """Compare with the stored baseline and/or save this run; the ``regression`` verdict."""
        from pytest_quaero.core.baseline import BaselineError, BaselineStore, compare, scenario_key
        from pytest_quaero.core.criteria import Verdict

        key = scenario_key(result)
        info: dict[str, Any] = {"key": key, "fingerprint": self.machine, "rules": [r.text for r in self.rules],
                                "status": "", "rows": [], "messages": []}
        result.extra["baseline"] = info
        required = ", ".join(r.text for r in self.rules) or (
            "no --quaero-compare-fail rule" if self.compare_path else "- (saving only)")
        passed = True
        measured = ""
        detail = ""
        criteria_passed = all(v["passed"] for v in result.verdicts)
        try:
            if self.compare_path is not None:
                store = BaselineStore(self.compare_path)
                info["path"] = str(store.path)
                found = store.find(key, self.machine)
                if found is None:
                    others = store.machines(key)
                    where = f" (baselines of {key} exist for: {', '.join(others)})" if others else ""
                    info["status"] = "missing"
                    measured = f"no baseline for {key} on {self.machine} in {store.path}{where}"
                    if self.require_baseline:
                        passed = False
                        detail = "--quaero-require-baseline"
                    else:
                        info["messages"].append(f"quaero[{result.scenario}]: {measured}; this run is recorded "
                                                "as the baseline")
                else:
                    comparison = compare(found.result, result, self.rules)
                    info.update(status="compared", saved_at=found.saved, regressed=comparison.regressed,
                                rows=[row.as_dict() for row in comparison.rows])
                    measured = comparison.summary()
                    passed = not comparison.regressed
            save_to = self.save_path or (self.compare_path if info["status"] == "missing" else None)
            if save_to is not None:
                if not criteria_passed:
                    info["saved"] = False
                    info["messages"].append(f"quaero[{result.scenario}]: not saved as a baseline: the run failed "
                                            "its criteria")
                elif info["status"] == "compared" and not passed:
                    info["saved"] = False
                    info["messages"].append(f"quaero[{result.scenario}]: not saved as a baseline: it regressed")
                else:
                    store = BaselineStore(save_to)
                    store.save(result, self.machine)
                    info.update(saved=True, saved_to=str(store.path))
                    if not measured:
                        measured = f"saved as the baseline of {key}"
                    if info["status"] != "compared":
                        info["status"] = info["status"] or "saved"
        except (BaselineError, OSError) as exc:
            info["status"] = "error"
            passed = False
            measured = f"baseline error: {exc}"
        return Verdict("regression", "Regression vs Baseline", measured, required, passed, None, detail).as_dict()


GATE_KEY = pytest.StashKey[Gate]()


def gate_of(config: pytest.Config) -> Gate | None:
    return config.stash.get(GATE_KEY, None)


# ---------------------------------------------------------------- options

#: where baselines live unless a path is given (relative to the rootdir); kept in settings, so
#: an inactive start-up that adds these options imports no baseline machinery
DEFAULT_STORE = DEFAULT_BASELINE_STORE


def add_options(group: Any) -> None:
    group.addoption(
        "--quaero-save-baseline", dest="quaero_save_baseline", nargs="?", const="", default=None, metavar="PATH",
        help=f"store each scenario's result as its baseline (scenario + machine) in PATH (default {DEFAULT_STORE}); "
        "give the value with '='.",
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


def _path(config: pytest.Config, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else Path(str(config.rootpath)) / path


def configure(config: pytest.Config, settings: Settings) -> tuple[Gate | None, Settings]:
    """The gate the options ask for (None if none) and the settings with disabled fixes applied.

    Raises :class:`pytest.UsageError` naming the option for any bad value.
    """
    opt = config.getoption
    save = opt("quaero_save_baseline", None)
    compare_path = opt("quaero_baseline", None)
    rules_text: list[str] = opt("quaero_compare_fail", None) or []
    require = bool(opt("quaero_require_baseline", False))
    disable_text = opt("quaero_disable", None)
    compare_fixes = bool(opt("quaero_compare_fixes", False))
    contention = opt("quaero_contention", None)
    faults = opt("quaero_faults", None)
    if not any([save is not None, compare_path, rules_text, require, disable_text, compare_fixes, contention, faults]):
        return None, settings
    shared_db = opt("quaero_shared_db", None)
    per_run = [name for name, given in (("--quaero-save-baseline", save is not None), ("--quaero-baseline", compare_path),
                                        ("--quaero-compare-fail", rules_text), ("--quaero-compare-fixes", compare_fixes),
                                        ("--quaero-contention", contention), ("--quaero-faults", faults)) if given]
    if shared_db and per_run:
        # Shards of one shared-db run are judged as a merge on the controller side; the gate
        # wraps single runs, so it would silently not apply there.
        raise pytest.UsageError(f"--quaero-shared-db={shared_db}: cannot be combined with {', '.join(per_run)}; "
                                "run the gate without --quaero-shared-db (--quaero-disable works with both).")
    gate = Gate(Path(str(config.rootpath)), require_baseline=require, compare_fixes=compare_fixes)
    try:
        if rules_text or require:
            from pytest_quaero.core.baseline import parse_rules

            gate.rules = parse_rules(rules_text)
            if not compare_path:
                compare_path = DEFAULT_STORE  # compare-fail without a path gates on the default store
        if save is not None:
            gate.save_path = _path(config, save or DEFAULT_STORE)
        if compare_path:
            gate.compare_path = _path(config, compare_path)
        if gate.wants_baseline:
            from pytest_quaero.core.baseline import fingerprint

            gate.machine = fingerprint()
        if disable_text is not None:
            from pytest_quaero.core.fixes import disable, parse_fixes

            gate.disabled = parse_fixes(disable_text)
            settings = disable(settings, gate.disabled)
        if contention is not None:
            from pytest_quaero.core.contention import parse_contention

            parse_contention(contention)
            gate.contention = contention
        if faults is not None:
            from pytest_quaero.core.faults import check_faults, parse_faults

            for message in check_faults(parse_faults(faults), settings):
                config.issue_config_time_warning(pytest.PytestConfigWarning(message), stacklevel=2)
            gate.faults = faults
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[GATE_KEY] = gate
    config.pluginmanager.register(GateSummary(config), "quaero-gate-summary")
    return gate, settings


# ---------------------------------------------------------------- terminal summary


class GateSummary:
    """Prints what the gate measured (before/after, contention, faults, baselines) after the criteria."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from pytest_quaero.plugin import STATE_KEY

        current = self.config.stash.get(STATE_KEY, None)
        if current is None:
            return
        lines: list[str] = []
        for result in current.results:
            lines.extend(summary_lines(result))
        if lines:
            terminalreporter.write_sep("-", "quaero regression gate")
            for line in lines:
                terminalreporter.write_line(line)


def summary_lines(result: RunResult) -> list[str]:
    """Terminal lines for one result's gate measurements."""
    from pytest_quaero.core.baseline import format_table
    from pytest_quaero.core.fixes import comparison_lines

    name = f"quaero[{result.scenario}]"
    lines: list[str] = []
    if result.extra.get("disabled_fixes"):
        lines.append(f"{name} ran with fixes disabled: {', '.join(result.extra['disabled_fixes'])}")
    if result.extra.get("fix_comparison"):
        lines.append(f"{name} before/after the lock fixes:")
        lines.extend(comparison_lines(result))
    contention = result.extra.get("contention")
    if contention:
        under = contention.get("checkpoint_under_load", {})
        after = contention.get("checkpoint_after", {})
        if under.get("log_frames") == -1:  # SQLite's answer when the database is not in WAL mode
            wal = "no WAL (rollback journal)"
        else:
            wal = (f"WAL max {contention.get('wal_max_bytes', 0) / 1024:.0f} KiB, checkpoint(TRUNCATE) under load "
                   f"busy={under.get('busy', '?')} ({under.get('log_frames', '?')} frames), "
                   f"after busy={after.get('busy', '?')}, final WAL {contention.get('wal_final_bytes', 0)} bytes")
        lines.append(f"{name} contention {contention['spec']}: {wal}")
        for error in contention.get("errors", []):
            lines.append(f"  contention error: {error}")
        for load in contention.get("loads", []):
            lines.append(f"  {load.get('text', load.get('kind'))}: {load.get('iterations', 0)} rounds, "
                         f"{load.get('busy_errors', 0)} busy errors of its own"
                         + (f", errors: {'; '.join(load['errors'])}" if load.get("errors") else ""))
    faults = result.extra.get("faults")
    if faults:
        lines.append(f"{name} faults {faults['spec']}:")
        for entry in faults.get("injected", []):
            what = {k: v for k, v in entry.items() if k not in ("fault", "spec", "at")}
            lines.append(f"  t+{entry.get('at', 0):.2f}s {entry['fault']}: "
                         + ", ".join(f"{k}={v}" for k, v in what.items()))
        for entry in faults.get("missed", []):
            lines.append(f"  NOT INJECTED {entry['spec']}: {entry['reason']}")
    baseline = result.extra.get("baseline")
    if baseline and baseline.get("rows"):
        lines.append(f"{name} against baseline {baseline.get('path')} ({baseline['key']} on {baseline['fingerprint']}):")
        lines.extend("  " + line for line in format_table(baseline["rows"]))
    elif baseline and baseline.get("saved"):
        lines.append(f"{name} saved as baseline {baseline['key']} on {baseline['fingerprint']} in "
                     f"{baseline.get('saved_to')}")
    return lines
