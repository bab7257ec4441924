"""What an explored run says in the reports: how many schedules, which one failed, how to replay it.

Read from ``RunResult.extra["exploration"]`` (:mod:`pytest_quaero.core.explore.runner`), never from a run.
"""

from __future__ import annotations

from html import escape
from typing import Any

from pytest_quaero.core.metrics import RunResult

__all__ = ["exploration_html", "exploration_text"]


def exploration_text(result: RunResult) -> str:
    """One line: ``explored random:200: 200 schedules (13.2/s), none failed``; empty for a free run."""
    data: Any = result.extra.get("exploration")
    if not isinstance(data, dict):
        return ""
    try:
        ran, rate = int(data["schedules"]), data.get("schedules_per_second")
        speed = f" ({rate:.1f}/s)" if isinstance(rate, (int, float)) else ""
        failing, last = data.get("failing"), data.get("last") or {}
        if str(data["strategy"]).startswith("replay "):
            shown = failing or last
            return (f"{data['strategy']}: trace hash {shown.get('trace_hash')}, "
                    f"{'failed ' + ', '.join(shown['failed']) if failing else 'passed'}")
        if failing:
            return (f"explored {data['strategy']}: schedule {failing['number']} of {ran} failed "
                    f"{', '.join(failing['failed'])}; replay with --quaero-replay={failing['token']} "
                    f"(trace hash {failing['trace_hash']})")
        return f"explored {data['strategy']}: {ran} schedules{speed}, none failed"
    except (KeyError, TypeError, ValueError, AttributeError):
        return "explored: the exploration record in this result has an unexpected shape"


def exploration_html(result: RunResult) -> str:
    """The line above as a paragraph, and the failing schedule's last steps; empty for a free run."""
    text = exploration_text(result)
    if not text:
        return ""
    failing = result.extra["exploration"].get("failing") if isinstance(result.extra["exploration"], dict) else None
    tail = failing.get("tail") if isinstance(failing, dict) else None
    steps = (f"<pre class=\"quaero-trace\">{escape(chr(10).join(str(line) for line in tail))}</pre>"
             if isinstance(tail, list) and tail else "")
    return f"<p class=\"quaero-exploration\">{escape(text)}</p>{steps}"
