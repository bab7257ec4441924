"""``pytest --quaero-audit=PATH.db``: the audit's findings as pytest items.

The reading and judging happen in :mod:`pytest_quaero.core.audit` (read-only,
pytest-free); this module makes one item per audit criterion, ships the findings
on the reports (so xdist brings them to the controller) and prints them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from pytest_quaero.core.audit import AUDIT_CRITERIA, AuditError, AuditResult, audit, audit_label, check_target
from pytest_quaero.core.criteria import Verdict
from pytest_quaero.core.settings import Settings

__all__ = ["AuditItem", "AuditNode", "AuditPlugin"]


# ------------------------------------------------------------------ pytest items


class AuditNode(pytest.Collector):
    """``quaero-audit[<file>]``: one read-only audit, judged by the items below it."""

    db_path: str
    settings: Settings
    result: AuditResult | None

    def collect(self) -> list[pytest.Item]:
        return [AuditItem.from_parent(self, name=key) for key, _ in AUDIT_CRITERIA]

    def setup(self) -> None:
        try:
            self.result = audit(self.db_path, self.settings)
        except (AuditError, sqlite3.DatabaseError) as exc:
            pytest.fail(f"{self.name}: {exc}", pytrace=False)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


class AuditFailed(AssertionError):
    pass


class AuditItem(pytest.Item):
    parent: AuditNode

    def runtest(self) -> None:
        result = self.parent.result
        assert result is not None
        if self.name in result.skipped:
            pytest.skip(result.skipped[self.name])
        verdict = Verdict.from_dict(result.verdicts[self.name])
        self.stash[_AUDIT_KEY] = result.as_dict()
        self.user_properties.extend([("quaero_audit", result.path), ("quaero_measured", verdict.measured),
                                     ("quaero_required", verdict.required), ("quaero_status", verdict.status)])
        if not verdict.passed:
            raise AuditFailed(f"{self.parent.name} {verdict.title}: {verdict.message}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, AuditFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.nodeid


_AUDIT_KEY = pytest.StashKey[dict[str, Any]]()


class AuditPlugin:
    """Adds the audit items, ships the findings on reports, prints them at the end."""

    def __init__(self, path: str, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.findings: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, config: pytest.Config, path: str, settings: Settings) -> AuditPlugin:
        try:
            check_target(path)
        except AuditError as exc:
            raise pytest.UsageError(str(exc)) from None
        return cls(path, settings)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        name = f"quaero-audit[{audit_label(self.path)}]"
        node: AuditNode = AuditNode.from_parent(session, name=name, nodeid=name)
        node.db_path, node.settings, node.result = self.path, self.settings, None
        report = session.ihook.pytest_make_collect_report(collector=node)
        session.ihook.pytest_collectreport(report=report)
        items.extend(x for x in report.result if isinstance(x, pytest.Item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        found = item.stash.get(_AUDIT_KEY, None)
        if found is not None and report.when == "call":
            report.quaero_audit = found  # a plain dict: xdist ships it to the controller
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        found = getattr(report, "quaero_audit", None)
        if found:
            self.findings[found["path"]] = found

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for path, found in self.findings.items():
            terminalreporter.write_sep("=", "quaero audit")
            terminalreporter.write_line(f"{path} ({found['opened']}); tables: {', '.join(found['tables'])}")
            for key, title in AUDIT_CRITERIA:
                verdict = found["verdicts"].get(key)
                if verdict is None:
                    reason = found["skipped"].get(key, "not judged")
                    terminalreporter.write_line(f"  {title:<36} SKIP  {reason}")
                    continue
                status = "PASS" if verdict["passed"] else "FAIL"
                terminalreporter.write_line(f"  {title:<36} {status}  measured {verdict['measured']}, "
                                            f"required {verdict['required']}", red=not verdict["passed"])
