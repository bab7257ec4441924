"""The regression gate around each scenario run: baselines, fixes, contention, faults.

:func:`gate_from_options` turns the gate's option values into a :class:`Gate` (or
``None`` when none was given). A scenario node lets it run the scenario: contention
loads and fault injectors ride along the run, the before/after variants follow it,
and the baseline is compared (and saved) before any item reports. Every outcome is
a verdict on the result; nothing here raises for a regression.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_quaero.core.baseline import (
    BaselineError,
    BaselineStore,
    CompareRule,
    compare,
    fingerprint,
    parse_rules,
    scenario_key,
)
from pytest_quaero.core.contention import ContentionLoad, parse_contention
from pytest_quaero.core.criteria import Verdict
from pytest_quaero.core.faults import FaultPlan, check_faults, parse_faults
from pytest_quaero.core.fixes import compare_fixes, disable, parse_fixes
from pytest_quaero.core.harness import Harness
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.pool import open_endpoint
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import DEFAULT_BASELINE_STORE, Settings

__all__ = ["Gate", "GateOptions", "gate_from_options"]


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

    # --- the run

    def _disturbances(self, scenario: Scenario) -> list[Any]:
        if not self.contention:
            return []
        load = ContentionLoad.from_spec(self.contention)
        load.prepare()  # spawned now, so interpreter start-up is not part of the run's time
        return [load]

    def run(self, harness: Harness, scenario: Scenario, extensions: Any = None) -> RunResult:
        """Run ``scenario`` with the gate's loads and faults, then fixes, recovery and baseline.

        ``extensions`` (the node's :class:`~pytest_quaero.extension.Extensions`) supply the
        user's own handler and queue/store; the fault injectors wrap those, never replace them.
        """
        settings = harness.settings
        handler = extensions.handler(settings) if extensions is not None else None
        endpoint_factory = extensions.endpoint_factory(settings) if extensions is not None else open_endpoint
        options: dict[str, Any] = {"handler": handler, "endpoint_factory": endpoint_factory}
        disturbances = self._disturbances(scenario)
        plan = None
        if self.faults:
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
        key = scenario_key(result)
        info: dict[str, Any] = {"key": key, "fingerprint": self.machine, "rules": [r.text for r in self.rules],
                                "status": "", "rows": [], "messages": []}
        result.extra["baseline"] = info
        required = (", ".join([*(r.text for r in self.rules), "counts per job exact"]) if self.compare_path
                    else "- (saving only)")
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
                    info["messages"].extend(comparison.warnings)
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


@dataclass(frozen=True)
class GateOptions:
    """The gate's option values as given (``None``/empty when not given)."""

    save_baseline: str | None = None  # "" means: the default store
    baseline: str | None = None
    compare_fail: tuple[str, ...] = ()
    require_baseline: bool = False
    disable: str | None = None
    compare_fixes: bool = False
    contention: str | None = None
    faults: str | None = None
    shared_db: str | None = None

    @property
    def given(self) -> bool:
        return any([self.save_baseline is not None, self.baseline, self.compare_fail, self.require_baseline,
                    self.disable is not None, self.compare_fixes, self.contention, self.faults])


def _path(rootpath: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else rootpath / path


def gate_from_options(
    options: GateOptions, rootpath: Path, settings: Settings, scenarios: Sequence[Scenario] = ()
) -> tuple[Gate | None, Settings, list[str]]:
    """The gate the options ask for (None if none), the settings with disabled fixes applied,
    and warnings to show (faults that will be slow as given).

    Raises ValueError naming the option for any bad value, and for a fault that cannot
    happen in one of ``scenarios`` (the chosen ones, each with the time limit it runs with).
    """
    if not options.given:
        return None, settings, []
    per_run = [name for name, given in (
        ("--quaero-save-baseline", options.save_baseline is not None), ("--quaero-baseline", options.baseline),
        ("--quaero-compare-fail", options.compare_fail), ("--quaero-compare-fixes", options.compare_fixes),
        ("--quaero-contention", options.contention), ("--quaero-faults", options.faults)) if given]
    if options.shared_db and per_run:
        # Shards of one shared-db run are judged as a merge on the controller side; the gate
        # wraps single runs, so it would silently not apply there.
        raise ValueError(f"--quaero-shared-db={options.shared_db}: cannot be combined with {', '.join(per_run)}; "
                         "run the gate without --quaero-shared-db (--quaero-disable works with both).")
    gate = Gate(rootpath, require_baseline=options.require_baseline, compare_fixes=options.compare_fixes)
    warnings: list[str] = []
    compare_path = options.baseline
    if options.compare_fail or options.require_baseline:
        gate.rules = parse_rules(list(options.compare_fail))
        if not compare_path:
            compare_path = DEFAULT_BASELINE_STORE  # compare-fail without a path gates on the default store
    if options.save_baseline is not None:
        gate.save_path = _path(rootpath, options.save_baseline or DEFAULT_BASELINE_STORE)
    if compare_path:
        gate.compare_path = _path(rootpath, compare_path)
    if gate.wants_baseline:
        gate.machine = fingerprint()
    if options.disable is not None:
        gate.disabled = parse_fixes(options.disable)
        settings = disable(settings, gate.disabled)
    if options.contention is not None:
        parse_contention(options.contention)
        gate.contention = options.contention
    if options.faults is not None:
        warnings.extend(check_faults(parse_faults(options.faults), settings, scenarios=scenarios))
        gate.faults = options.faults
    return gate, settings, warnings
