"""Test items of the plugin's own: ``quaero[medium]::sqlite_busy_errors`` and friends.

A scenario is a collector whose ``setup`` runs the load once (pytest calls it when
the scenario's first item runs); each criterion is an item that passes or fails on
the verdict with ``measured X, required Y`` and no traceback.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from pytest_quaero.core.criteria import CRITERIA, Verdict
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.session import carry_result, session_of

if TYPE_CHECKING:
    # annotations only: the harness pulls in run, pool, multiprocessing and sqlite3, which the
    # items do not need until a scenario runs (benchmarks/bench_startup.py)
    from pytest_quaero.core.harness import Harness

__all__ = [
    "BaselineWarning",
    "CriterionFailed",
    "CriterionItem",
    "RegressionItem",
    "ScenarioNode",
    "collect_nodes",
    "make_scenario_nodes",
]


class BaselineWarning(pytest.PytestWarning):
    """No baseline to compare with yet (it was recorded instead), or it could not be saved."""


class CriterionFailed(AssertionError):
    """A criterion's verdict was FAIL."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


class ScenarioNode(pytest.Collector):
    """``quaero[<scenario>]``: one load run, judged by the criterion items below it."""

    scenario: Scenario
    harness: Harness
    result: RunResult | None
    carried: bool = False
    #: why the run could not be carried out (None when it ran), and the item that reported it
    problem: str | None = None
    problem_reported_on: str | None = None

    @classmethod
    def create(cls, parent: pytest.Session, scenario: Scenario, harness: Harness) -> ScenarioNode:
        name = f"quaero[{scenario.name}]"
        node: ScenarioNode = cls.from_parent(parent, name=name, nodeid=name)
        node.scenario = scenario
        node.harness = harness
        node.result = None
        return node

    def collect(self) -> list[pytest.Item]:
        from pytest_quaero.extension import Extensions  # deferred: the hook calls import the run machinery

        # the built-in criteria, then the ones pytest_quaero_criteria declares: an item each
        extra = Extensions.for_node(self).criteria(self.scenario)
        items: list[pytest.Item] = [CriterionItem.from_parent(self, name=c.key) for c in (*CRITERIA, *extra)]
        gate = session_of(self.config).gate  # regression gate options: ::fault_recovery, ::regression
        if gate is not None and gate.faults:
            items.append(CriterionItem.from_parent(self, name="fault_recovery"))
        if gate is not None and gate.wants_baseline:
            items.append(RegressionItem.from_parent(self, name="regression"))
        return items

    def setup(self) -> None:
        # deferred: the run machinery (and sqlite3) is imported only when a scenario really runs
        import sqlite3

        # deferred, as above
        from pytest_quaero.core.db import DatabaseError
        from pytest_quaero.core.run import RunError
        from pytest_quaero.extension import Extensions

        self.carried = False
        self.problem = self.problem_reported_on = None
        gate = session_of(self.config).gate
        extensions = Extensions.for_node(self)

        try:
            if gate is not None:  # loads, faults, before/after variants, baseline compare
                self.result = gate.run(self.harness, self.scenario, extensions)
            else:
                self.result = self.harness.run(self.scenario, extensions=extensions)
        except (RunError, DatabaseError) as exc:
            self.problem = f"{self.name} could not run: {exc}{self._kept_database()}"
        except (sqlite3.Error, OSError) as exc:  # the database or its folder failed under the run
            self.problem = f"{self.name} could not run: {type(exc).__name__}: {exc}{self._kept_database()}"
        except pytest.fail.Exception as exc:  # a hook's contract check already said it in one sentence
            self.problem = str(exc.msg)
        # Not raised here: pytest would repeat a setup error on every criterion item. The first
        # item to run reports it (CriterionItem.setup), the others are skipped as not measured.

    def _kept_database(self) -> str:
        """``database kept: PATH`` for a run that failed: the file stays as the failure left it."""
        settings = self.harness.settings
        if settings.db_path:
            found = [os.path.abspath(settings.db_path)]
        else:
            base = self.harness.base_dir
            found = sorted((str(p) for p in base.glob(f"*-{self.scenario.name}/quaero.db")),
                           key=os.path.getmtime) if base is not None else []
        return f"\ndatabase kept: {found[-1]}" if found and os.path.exists(found[-1]) else ""

    def verdict(self, key: str) -> Verdict:
        assert self.result is not None
        for data in self.result.verdicts:
            if data["criterion"] == key:
                return Verdict.from_dict(data)
        raise LookupError(f"{self.name}: no verdict for {key!r}")

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


class CriterionItem(pytest.Item):
    """One criterion of one scenario: passes or fails on the run's verdict."""

    parent: ScenarioNode

    def setup(self) -> None:
        problem = self.parent.problem
        if problem is None:
            return
        if self.parent.problem_reported_on is None:
            self.parent.problem_reported_on = self.nodeid
            pytest.fail(problem, pytrace=False)
        pytest.skip(f"not measured: {self.parent.name} could not run (reported on {self.parent.problem_reported_on})")

    def runtest(self) -> None:
        verdict = self.parent.verdict(self.name)
        if not self.parent.carried and self.parent.result is not None:
            # The first criterion to run carries the whole result to the summary and reports.
            carry_result(self, self.parent.result)
            self.parent.carried = True
        self.user_properties.extend([
            ("quaero_scenario", self.parent.scenario.name),
            ("quaero_measured", verdict.measured),
            ("quaero_required", verdict.required),
            ("quaero_status", verdict.status),
        ])
        if not verdict.passed:
            raise CriterionFailed(verdict)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CriterionFailed):
            verdict = excinfo.value.verdict
            result = self.parent.result
            lines = [f"{self.parent.name} {verdict.title}: {verdict.message}"]
            if result is not None and result.extra.get("kept"):
                if result.settings.get("backend") != "postgresql":  # a PostgreSQL run's schema is dropped
                    lines.append(f"database kept: {result.db_path}")
                lines.append(f"log kept:      {result.log_path}")
            return "\n".join(lines)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.nodeid


def make_scenario_nodes(session: pytest.Session, scenarios: list[Scenario], harness: Harness) -> list[pytest.Item]:
    """All criterion items of every chosen scenario, in the order given."""
    return collect_nodes(session, [ScenarioNode.create(session, scenario, harness) for scenario in scenarios])


def collect_nodes(session: pytest.Session, nodes: list[pytest.Collector]) -> list[pytest.Item]:
    """Collect our nodes the way pytest collects any node, so "collected N items", ``--co``
    and other plugins' collect hooks see these items like any others."""
    items: list[pytest.Item] = []
    for node in nodes:
        report = session.ihook.pytest_make_collect_report(collector=node)
        session.ihook.pytest_collectreport(report=report)
        if report.failed:
            raise pytest.UsageError(f"{node.name}: could not be collected: {report.longreprtext}")
        items.extend(x for x in report.result if isinstance(x, pytest.Item))
    return items


class RegressionItem(CriterionItem):
    """``quaero[<scenario>]::regression``: judged by the run's baseline verdict; fails with a
    before/now/limit table. Warnings the comparison left (no baseline yet: recorded instead;
    a run not saved) are issued here, so pytest reports them against this item."""

    def runtest(self) -> None:
        result = self.parent.result
        info = result.extra.get("baseline", {}) if result is not None else {}
        for message in info.get("messages", []):
            warnings.warn(BaselineWarning(message), stacklevel=1)
        self.user_properties.append(("quaero_baseline_status", info.get("status", "")))
        super().runtest()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from pytest_quaero.core.baseline import format_table  # deferred: only a failing comparison needs it

        if not isinstance(excinfo.value, CriterionFailed):
            return super().repr_failure(excinfo, style=style)
        verdict = excinfo.value.verdict
        lines = [f"{self.parent.name} {verdict.title}: {verdict.message}"]
        result = self.parent.result
        info = result.extra.get("baseline", {}) if result is not None else {}
        if info.get("rows"):
            lines.append(f"baseline: {info.get('path')} ({info['key']} on {info['fingerprint']}, "
                         f"saved {info.get('saved_at', '?')})")
            lines.extend(format_table(info["rows"]))
        return "\n".join(lines)
