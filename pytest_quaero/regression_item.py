"""``quaero[<scenario>]::regression``: the baseline comparison as a test item.

It passes or fails on the ``regression`` verdict the gate attached to the run (see
:mod:`pytest_quaero.gate`), like any criterion item, and a failure shows the
before/now/limit table instead of a traceback. Warnings the comparison left (no
baseline yet: recorded instead; a run not saved) are issued here, so pytest reports
them against this item.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from pytest_quaero.gate import BaselineWarning
from pytest_quaero.items import CriterionFailed, CriterionItem

__all__ = ["RegressionItem"]


class RegressionItem(CriterionItem):
    """Judged by the run's ``regression`` verdict; fails with a before/now/limit table."""

    def runtest(self) -> None:
        result = self.parent.result
        info = result.extra.get("baseline", {}) if result is not None else {}
        for message in info.get("messages", []):
            warnings.warn(BaselineWarning(message), stacklevel=1)
        self.user_properties.append(("quaero_baseline_status", info.get("status", "")))
        super().runtest()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from pytest_quaero.core.baseline import format_table

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
