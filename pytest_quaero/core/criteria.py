"""The template's pass/fail criteria, judged from a RunResult and never from SQLite.

Each criterion becomes one test item (``quaero[medium]::sqlite_busy_errors``) whose
message reads ``measured X, required Y``. Thresholds default to the template's and
can be set per scenario (ini ``quaero_thresholds``, ``[thresholds.medium]`` in the
config file, or ``--quaero-threshold``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_quaero.core.fields import (
    MAX_DURATION_TEXT,
    SettingsError,
    format_duration,
    parse_decimal,
    parse_duration,
    parse_whole,
    shown,
)
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.scenarios import Scenario

__all__ = ["CRITERIA", "Criterion", "Thresholds", "Verdict", "evaluate", "thresholds_for"]


# ASCII digits, finite numbers, one unit at most: float() would take 'nan', '1e3', fullwidth digits and
# rstrip('%') '50%%%'.


def _percent(text: str) -> float:
    value = parse_decimal(text.strip().removesuffix("%"))
    if not 0 <= value <= 100:
        raise ValueError(text)
    return value


def _count(text: str) -> int:
    value = parse_whole(text)
    if value < 0:
        raise ValueError(text)
    return value


def _rate(text: str) -> float:
    return parse_decimal(text.strip().removesuffix("/s").removesuffix("jobs"))


def _time_limit(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class Thresholds:
    """What each criterion requires; the template's numbers unless overridden."""

    max_execution_time: float = 300.0
    max_busy_errors: int = 0
    min_deletion_rate: float = 100.0
    min_hierarchy_integrity: float = 100.0
    min_completion_rate: float = 95.0
    #: how far a measured stagger gap may be from the setting, seconds
    stagger_tolerance: float = 0.1
    min_throughput: float = 10.0
    max_duplicates: int = 0


_THRESHOLD_PARSERS: dict[str, tuple[Callable[[str], Any], str]] = {
    "max_execution_time": (_time_limit, f"a duration > 0 such as 90s or 5m, at most {MAX_DURATION_TEXT}"),
    "max_busy_errors": (_count, "a whole number >= 0"),
    "min_deletion_rate": (_percent, "a percentage 0..100"),
    "min_hierarchy_integrity": (_percent, "a percentage 0..100"),
    "min_completion_rate": (_percent, "a percentage 0..100"),
    "stagger_tolerance": (parse_duration, f"a duration such as 50ms, at most {MAX_DURATION_TEXT}"),
    "min_throughput": (_rate, "jobs per second, a number >= 0"),
    "max_duplicates": (_count, "a whole number >= 0"),
}


def thresholds_for(
    scenario: Scenario, overrides: Mapping[str, Mapping[str, str]], sources: Mapping[str, str] | None = None
) -> Thresholds:
    """The scenario's thresholds: template defaults, then ``*`` overrides, then its own.

    ``sources`` (``Settings.threshold_sources``) lets an error say where a bad value came from.
    """
    values: dict[str, Any] = {"max_execution_time": scenario.time_limit}
    for scope in ("*", scenario.name):
        for key, raw in overrides.get(scope, {}).items():
            parser = _THRESHOLD_PARSERS.get(key)
            origin = (sources or {}).get(f"{scope}.{key}")
            where = f"threshold {'' if scope == '*' else shown(scope) + '.'}{shown(key)} = {shown(repr(raw))}"
            if origin:
                where += f" ({origin})"
            if parser is None:
                raise SettingsError(f"{where}: unknown criterion threshold; allowed: {', '.join(_THRESHOLD_PARSERS)}.")
            try:
                values[key] = parser[0](str(raw))
            except (ValueError, TypeError):
                raise SettingsError(f"{where}: invalid value; allowed: {parser[1]}.") from None
    return Thresholds(**values)


def check_threshold_scopes(overrides: Mapping[str, Mapping[str, str]], known: Mapping[str, Scenario]) -> None:
    """A threshold for a scenario that does not exist is a typo, not a no-op."""
    for scope in overrides:
        if scope != "*" and scope not in known:
            raise SettingsError(
                f"threshold scope {scope!r}: unknown scenario; allowed: {', '.join(known)} "
                "(or no prefix for every scenario)."
            )


@dataclass(frozen=True)
class Verdict:
    """One criterion judged: what was measured, what was required, and whether it passed."""

    criterion: str
    title: str
    measured: str
    required: str
    passed: bool
    value: float | None = None
    detail: str = ""

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def message(self) -> str:
        text = f"measured {self.measured}, required {self.required}"
        return f"{text} ({self.detail})" if self.detail else text

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verdict:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Criterion:
    key: str
    title: str
    judge: Callable[[RunResult, Thresholds], Verdict]


def _seconds(value: float) -> str:
    return f"{value:.2f}s" if value < 120 else f"{value / 60:.1f} min"


def _execution_time(r: RunResult, t: Thresholds) -> Verdict:
    limit = format_duration(t.max_execution_time)
    detail = "deadline reached before the queue drained" if r.timed_out else ""
    return Verdict("execution_time", "Execution Time", _seconds(r.execution_time), f"< {limit}",
                   not r.timed_out and r.execution_time < t.max_execution_time, r.execution_time, detail)


def _busy(r: RunResult, t: Thresholds) -> Verdict:
    totals = r.retry_totals
    details = []
    if totals.busy_events:
        codes = ", ".join(f"{code} x{n}" for code, n in sorted(totals.codes.items()))
        details.append(f"{codes}; {totals.successful_retries} absorbed by retries, {totals.exhausted} escaped; "
                       f"{totals.fast_busy} failed well before busy_timeout (a lock-upgrade or snapshot bug, "
                       "not contention)")
    hidden = r.extra.get("hidden_busy", {}).get("operations", {})
    if hidden:
        where = ", ".join(f"{op} x{n}" for op, n in sorted(hidden.items()))
        details.append(f"{r.hidden_busy_errors} caught by the code under test itself (seen on its connections, "
                       f"never retried or counted: {where})")
    busy = r.busy_errors
    return Verdict("sqlite_busy_errors", "SQLITE_BUSY Errors", str(busy), f"<= {t.max_busy_errors}"
                   if t.max_busy_errors else "= 0", busy <= t.max_busy_errors, busy, "; ".join(details))


def _deletion(r: RunResult, t: Thresholds) -> Verdict:
    deletable = r.messages_enqueued - r.dead_messages
    detail = f"{r.messages_left - r.dead_messages} messages left undeleted" if r.messages_left > r.dead_messages else ""
    return Verdict("queue_deletion", "Queue Deletion Success Rate",
                   f"{r.deletion_rate:.1f}% ({max(0, r.messages_deleted)}/{deletable} deleted)",
                   _pct_req(t.min_deletion_rate), r.deletion_rate >= t.min_deletion_rate, r.deletion_rate, detail)


def _hierarchy(r: RunResult, t: Thresholds) -> Verdict:
    i = r.integrity
    problems = []
    if i.get("orphans"):
        problems.append(f"{i['orphans']} orphaned children")
    if i.get("missing_parents"):
        problems.append(f"{len(i['missing_parents'])} parents missing")
    if i.get("missing_children"):
        problems.append(f"{i['missing_children']} children missing")
    if i.get("extra_children"):
        problems.append(f"{i['extra_children']} unexpected children")
    if i.get("progress_mismatches"):
        problems.append(f"{len(i['progress_mismatches'])} parents with wrong progress counters")
    if i.get("status_mismatches"):
        problems.append(f"{len(i['status_mismatches'])} parents with the wrong status")
    return Verdict("hierarchy_integrity", "Hierarchy Integrity", f"{r.hierarchy_integrity:.1f}%",
                   _pct_req(t.min_hierarchy_integrity), r.hierarchy_integrity >= t.min_hierarchy_integrity,
                   r.hierarchy_integrity, "; ".join(problems))


def _completion(r: RunResult, t: Thresholds) -> Verdict:
    detail = f"{r.jobs_failed} failed" if r.jobs_failed else ""
    return Verdict("completion_rate", "Job Completion Rate",
                   f"{r.completion_rate:.1f}% ({r.jobs_completed}/{r.total_jobs})",
                   f">= {t.min_completion_rate:g}%", r.completion_rate >= t.min_completion_rate, r.completion_rate,
                   detail)


def _stagger(r: RunResult, t: Thresholds) -> Verdict:
    setting = float(r.settings.get("stagger", 0.0))
    required = f"{format_duration(setting)} ± {format_duration(t.stagger_tolerance)} between worker starts"
    # A worker due (k x stagger after the pool started) well before the queue drained must
    # have started; one whose turn never came because the work ran out is no fault of the pool.
    pool_started = r.phase_offset("pool_started") or 0.0
    never = [w for w in r.workers if w.start_offset is None]
    overdue = [w.name for w in never if pool_started + w.index * setting + t.stagger_tolerance < r.execution_time]
    if overdue:
        return Verdict("worker_staggering", "Worker Staggering", f"{', '.join(overdue)} never started", required,
                       False, detail="due before the queue drained")
    gaps = r.stagger_gaps
    if not gaps:
        # No gap was measured, so nothing confirms the stagger: never a PASS.
        started = len(r.workers) - len(never)
        configured = int(r.settings.get("workers", len(r.workers)))
        if configured < 2:
            # one worker has nothing to stagger against: nothing can regress, so not a failure
            return Verdict("worker_staggering", "Worker Staggering", "not applicable: 1 worker", required, True,
                           detail="staggering needs at least 2 workers (--quaero-workers)")
        if not never:
            why = "staggering needs at least 2 workers (--quaero-workers)"
        else:
            first = min(never, key=lambda w: w.index)
            why = (f"the run ended before {first.name} was due ({format_duration(first.index * setting)} after "
                   "the pool started); use a shorter --quaero-stagger or a bigger scenario")
        return Verdict("worker_staggering", "Worker Staggering",
                       f"not exercised: {started} of {configured} workers started", required, False, detail=why)
    detail = f"{len(never)} workers not due before the queue drained" if never else ""
    worst = max(gaps, key=lambda gap: abs(gap - setting))
    measured = ", ".join(f"{gap * 1000:.0f}ms" for gap in gaps)
    return Verdict("worker_staggering", "Worker Staggering", f"gaps {measured}", required,
                   abs(worst - setting) <= t.stagger_tolerance, worst, detail)


def _throughput(r: RunResult, t: Thresholds) -> Verdict:
    return Verdict("throughput", "Throughput", f"{r.throughput:.1f} jobs/sec", f">= {t.min_throughput:g} jobs/sec",
                   r.throughput >= t.min_throughput, r.throughput)


def _duplicates(r: RunResult, t: Thresholds) -> Verdict:
    detail = f"e.g. {', '.join(r.duplicate_jobs[:3])}" if r.duplicate_jobs else ""
    return Verdict("no_duplicate_processing", "Jobs Processed Twice", str(r.duplicate_completions),
                   "= 0" if not t.max_duplicates else f"<= {t.max_duplicates}",
                   r.duplicate_completions <= t.max_duplicates, r.duplicate_completions, detail)


def _pct_req(minimum: float) -> str:
    return "= 100%" if minimum >= 100 else f">= {minimum:g}%"


CRITERIA: tuple[Criterion, ...] = (
    Criterion("execution_time", "Execution Time", _execution_time),
    Criterion("sqlite_busy_errors", "SQLITE_BUSY Errors", _busy),
    Criterion("queue_deletion", "Queue Deletion Success Rate", _deletion),
    Criterion("hierarchy_integrity", "Hierarchy Integrity", _hierarchy),
    Criterion("completion_rate", "Job Completion Rate", _completion),
    Criterion("worker_staggering", "Worker Staggering", _stagger),
    Criterion("throughput", "Throughput", _throughput),
    Criterion("no_duplicate_processing", "Jobs Processed Twice", _duplicates),
)


def evaluate(result: RunResult, thresholds: Thresholds) -> list[Verdict]:
    """Judge every criterion; the order is the template's table order."""
    return [criterion.judge(result, thresholds) for criterion in CRITERIA]
