"""The lock fixes, one by one: turn them off, and measure what each one buys.

The team's fixes for "database is locked" are five settings; each has an "off" value
that is the bug it fixed:

==============  ===========================  =======================================
fix             off means                    what goes wrong without it
==============  ===========================  =======================================
``wal``         ``wal=False``                rollback journal: readers block the writer
``busy_timeout`` ``busy_timeout_ms=0``       any lock conflict fails at once
``retries``     ``retry_attempts=1``         every busy error escapes to the caller
``stagger``     ``stagger=0``                all workers start (and collide) together
``immediate``   ``begin_immediate=False``    deferred read-then-write: SQLITE_BUSY_SNAPSHOT
==============  ===========================  =======================================

``--quaero-disable=FIX,...`` turns fixes off for every run of the session. The criteria
then judge what the user ran with: ``worker_staggering`` checks the pool against the
stagger it was given (0 when disabled), so a deliberately unstaggered pool is not a
"broken stagger"; the lack of stagger shows up where it hurts, in the busy errors.

``--quaero-compare-fixes`` runs each scenario with its settings as given (the run the
criteria judge: "After Fixes"), then with all five fixes off ("Before Fixes"), then once
per fix with only that fix off (the ablation). The extra runs use their own temporary
databases, are bounded by a deadline of ``max(10s, 5 x the judged run's time)`` (a run
with fixes off may never drain: escaped errors leave messages for the visibility
timeout), and never fail the session. Disabled fixes produce real, counted errors:
busy errors that escape a producer or worker are counted, and the run still finishes.

Keys written to ``result.extra`` (read by the Markdown and HTML reports):

``disabled_fixes``
    ``["wal", ...]``: fixes the session turned off with ``--quaero-disable``
``fix_comparison``
    ``before`` / ``after``: :func:`figures` of the all-off run and of the judged run;
    ``busy_errors_before``, ``busy_errors_after``; ``improvement_pct`` (busy errors
    eliminated, percent; ``None`` when there were none before);
    ``ablation``: one entry per fix, the :func:`figures` of the run with only that fix
    off plus ``fix``, ``title``, ``off`` (the setting used) and the differences from the
    judged run ``delta_busy_errors``, ``delta_retries``, ``delta_throughput``;
    ``deadline`` (seconds allowed to each extra run)

:func:`figures` holds ``busy_errors``, ``escaped_busy_errors``, ``fast_busy_errors``,
``codes`` (per SQLite error name), ``retries``, ``successful_retries``, ``throughput``,
``execution_time``, ``jobs_completed``, ``total_jobs``, ``completion_rate``,
``timed_out``, ``producer_errors``, ``worker_errors`` (counts), ``criteria_failed``
(criterion keys) and ``settings`` (the five fix settings the run used).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_quaero.core.criteria import Thresholds, evaluate
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.table import aligned

__all__ = ["FIXES", "Fix", "FixError", "compare_fixes", "disable", "figures", "parse_fixes"]


class FixError(ValueError):
    """An unknown fix name; the message lists the known ones."""


@dataclass(frozen=True)
class Fix:
    """One lock fix and the setting that turns it off."""

    name: str
    title: str
    setting: str
    off: Any


FIXES: dict[str, Fix] = {
    fix.name: fix
    for fix in (
        Fix("wal", "WAL journal mode", "wal", False),
        Fix("busy_timeout", "busy_timeout", "busy_timeout_ms", 0),
        Fix("retries", "retry with backoff", "retry_attempts", 1),
        Fix("stagger", "staggered worker start", "stagger", 0.0),
        Fix("immediate", "BEGIN IMMEDIATE", "begin_immediate", False),
    )
}
_ALIASES = {"busy-timeout": "busy_timeout", "busytimeout": "busy_timeout", "retry": "retries",
            "begin_immediate": "immediate", "begin-immediate": "immediate", "journal": "wal"}
FIX_SETTINGS = tuple(fix.setting for fix in FIXES.values())


def parse_fixes(text: str, *, option: str = "--quaero-disable") -> list[str]:
    """``'wal,stagger'`` -> ``['wal', 'stagger']``; ``all`` names every fix."""
    names: list[str] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        chosen = list(FIXES) if part == "all" else [_ALIASES.get(part, part)]
        for name in chosen:
            if name not in FIXES:
                raise FixError(f"{option}={text}: unknown fix {part!r}; allowed: {', '.join(FIXES)} (or all)")
            if name not in names:
                names.append(name)
    if not names:
        raise FixError(f"{option}={text!r}: name at least one fix; allowed: {', '.join(FIXES)} (or all)")
    return names


def disable(settings: Settings, names: Sequence[str], *, source: str = "--quaero-disable") -> Settings:
    """``settings`` with the named fixes turned off (their ``sources`` say ``source``)."""
    if not names:
        return settings
    return settings.replace(source=source, **{FIXES[name].setting: FIXES[name].off for name in names})


def figures(result: RunResult) -> dict[str, Any]:
    """What the before/after and ablation tables show of one run."""
    totals = result.retry_totals
    return {
        "settings": {name: result.settings.get(name) for name in FIX_SETTINGS},
        "busy_errors": result.busy_errors,  # the swallowed ones too, as the criterion counts them
        "escaped_busy_errors": totals.exhausted,
        "fast_busy_errors": totals.fast_busy,
        "codes": dict(totals.codes),
        "retries": max(0, totals.attempts - totals.operations),
        "successful_retries": totals.successful_retries,
        "throughput": round(result.throughput, 3),
        "execution_time": round(result.execution_time, 4),
        "jobs_completed": result.jobs_completed,
        "total_jobs": result.total_jobs,
        "completion_rate": round(result.completion_rate, 2),
        "timed_out": result.timed_out,
        "producer_errors": len(result.producer_errors),
        "worker_errors": len(result.worker_errors),
        "criteria_failed": [v["criterion"] for v in result.verdicts if not v["passed"]],
    }


def improvement(before: int, after: int) -> float | None:
    """Percent of busy errors eliminated; None when there were none to eliminate."""
    if before <= 0:
        return None
    return round(100.0 * (before - after) / before, 2)


def compare_fixes(
    result: RunResult,
    scenario: Scenario,
    settings: Settings,
    *,
    thresholds: Thresholds,
    run_options: Callable[[], dict[str, Any]] = dict,
    work_dir: str | Path,
    ablation: bool = True,
) -> dict[str, Any]:
    """Run the all-off and single-fix-off variants of ``scenario``; fill ``result.extra``.

    ``result`` is the judged run ("after"); ``run_options()`` gives fresh extra options
    (e.g. contention loads) for each variant, so they run under the same disturbance.
    """
    # Extra runs get their own files even when the session runs on --quaero-db.
    base = dataclasses.replace(settings, db_path=None)
    deadline = min(scenario.time_limit, max(10.0, 5 * result.execution_time))
    work = Path(work_dir)
    after = figures(result)

    def variant(name: str, names: Sequence[str]) -> dict[str, Any]:
        run_dir = work / name
        options = run_options()
        try:
            other = run_scenario(scenario, disable(base, names, source="--quaero-compare-fixes"), run_dir=run_dir,
                                 deadline=deadline, **options)
            other.verdicts = [v.as_dict() for v in evaluate(other, thresholds)]
            return figures(other)
        except Exception as exc:  # noqa: BLE001 - whatever stops a variant is reported; it never fails the session
            return {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for disturbance in options.get("disturbances", ()):
                close = getattr(disturbance, "close", None)
                if close is not None:
                    close()
            shutil.rmtree(run_dir, ignore_errors=True)

    before = variant("all-fixes-off", list(FIXES))
    comparison: dict[str, Any] = {
        "before": before,
        "after": after,
        "busy_errors_before": before.get("busy_errors"),
        "busy_errors_after": after["busy_errors"],
        "improvement_pct": improvement(before.get("busy_errors", 0), after["busy_errors"]),
        "deadline": deadline,
        "ablation": [],
    }
    if ablation:
        for fix in FIXES.values():
            row = variant(f"without-{fix.name}", [fix.name])
            row.update({"fix": fix.name, "title": fix.title, "off": f"{fix.setting}={fix.off!r}"})
            if "error" not in row:
                row["delta_busy_errors"] = row["busy_errors"] - after["busy_errors"]
                row["delta_retries"] = row["retries"] - after["retries"]
                row["delta_throughput"] = round(row["throughput"] - after["throughput"], 3)
            comparison["ablation"].append(row)
    shutil.rmtree(work, ignore_errors=True)
    result.extra["fix_comparison"] = comparison
    return comparison


def comparison_lines(result: RunResult) -> list[str]:
    """The before/after and ablation table as terminal lines."""
    comparison = result.extra.get("fix_comparison")
    if not comparison:
        return []
    rows: list[tuple[str, ...]] = [
        ("run", "busy errors", "escaped", "retries", "throughput", "completed", "criteria failed"),
    ]

    def row(label: str, data: dict[str, Any]) -> None:
        if "error" in data:
            rows.append((label, "-", "-", "-", "-", "-", data["error"]))
            return
        timed_out = " (deadline)" if data["timed_out"] else ""
        rows.append((label, str(data["busy_errors"]), str(data["escaped_busy_errors"]), str(data["retries"]),
                     f"{data['throughput']:.1f} jobs/s", f"{data['jobs_completed']}/{data['total_jobs']}{timed_out}",
                     ", ".join(data["criteria_failed"]) or "none"))

    row("all fixes off (before)", comparison["before"])
    for entry in comparison["ablation"]:
        row(f"without {entry['fix']}", entry)
    row("as configured (after)", comparison["after"])
    lines = aligned(rows, indent="  ")
    pct = comparison["improvement_pct"]
    lines.append(
        f"  busy errors before fixes: {comparison['busy_errors_before']}, after: {comparison['busy_errors_after']}, "
        + (f"improvement: {pct:g}% eliminated" if pct is not None else "improvement: n/a (none before)")
    )
    return lines
