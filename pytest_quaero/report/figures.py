"""The figures the Markdown report prints, computed from :class:`RunResult` objects.

Pure functions over results, no I/O: totals across runs, the scaling rule, grouping by
scenario, the ``--quaero-compare-fixes`` lookups and the integrity queries a run
recorded. :class:`ReportFigures` gathers them once per report for the section renderers
(:mod:`pytest_quaero.report.sections`); :class:`ReportContext` is what the report needs
besides the results.

Keys of ``RunResult.extra`` read here (written by other features, all optional, all read
defensively so a missing or reshaped entry degrades to "not measured"):

* ``fix_comparison`` (``--quaero-compare-fixes``, :mod:`pytest_quaero.core.fixes`):
  ``before.busy_errors`` (all fixes off) against the judged run, and ``ablation`` rows
  (``fix``, ``title``, ``busy_errors``, ``retries``, ``throughput``, ``delta_busy_errors``,
  or ``error``). ``compare_fixes`` with the same ``busy_errors`` is read as a fallback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.settings import Settings, parse_duration
from pytest_quaero.report.locks import detection_checks
from pytest_quaero.report.scaling import LINEAR_MIN_FACTOR, Scaling, measure_scaling, own_settings
from pytest_quaero.report.wording import describe_failure, words_for

__all__ = [
    "LINEAR_MIN_FACTOR",
    "MAX_QUEUE_ROWS",
    "TEMPLATE_SCENARIOS",
    "ReportContext",
    "ReportFigures",
    "Run",
    "Scaling",
    "Totals",
    "before_fixes",
    "comparison_error",
    "expected_jobs",
    "failed_verdicts",
    "find_query",
    "find_verdict",
    "fix_comparison",
    "group_by_scenario",
    "measure_scaling",
    "own_settings",
    "query_problems",
    "queue_intervals",
    "queue_peak",
    "section_names",
    "settings_differ",
    "stagger_tolerance",
]

TEMPLATE_SCENARIOS = ("light", "medium", "heavy")
#: Queue Length Over Time shows at most this many steps; the step grows to fit (30s for a 5-minute run)
MAX_QUEUE_ROWS = 10
_NICE_STEPS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass
class ReportContext:
    """What the report says besides the results: when, where, with which settings."""

    results: list[RunResult]
    settings: Settings
    created: float = field(default_factory=time.time)
    machine: dict[str, Any] = field(default_factory=dict)
    commit: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    #: wall time of the whole pytest session, seconds (None when unknown)
    session_duration: float | None = None
    #: where --quaero-json wrote this session's document, if it did
    json_path: str | None = None


# ---------------------------------------------------------------- verdicts


def find_verdict(result: RunResult, key: str) -> dict[str, Any] | None:
    """The verdict of criterion ``key`` in ``result``, if it was judged."""
    for verdict in result.verdicts:
        if verdict.get("criterion") == key:
            return verdict
    return None


def failed_verdicts(results: Iterable[RunResult]) -> list[tuple[RunResult, dict[str, Any]]]:
    return [(r, v) for r in results for v in r.verdicts if not v.get("passed")]


def stagger_tolerance(verdict: dict[str, Any] | None) -> float | None:
    """The tolerance the stagger verdict applied (its ``required`` says ``500ms ± 100ms ...``)."""
    if verdict is None:
        return None
    match = re.search(r"± (\S+)", str(verdict.get("required", "")))
    if match is None:
        return None
    try:
        return parse_duration(match.group(1))
    except ValueError:
        return None


# ---------------------------------------------------------------- grouping results by scenario


@dataclass
class Run:
    """One result under the label the report gives it (``light``, or ``light (run ab12)`` when repeated)."""

    label: str
    result: RunResult


def group_by_scenario(results: Sequence[RunResult]) -> dict[str, list[Run]]:
    """Scenario name -> its runs, template scenarios first; repeated runs get their run id in the label."""
    found: list[str] = [n for n in TEMPLATE_SCENARIOS if any(r.scenario == n for r in results)]
    found += [r.scenario for r in results if r.scenario not in found and r.scenario not in TEMPLATE_SCENARIOS]
    found = list(dict.fromkeys(found))
    groups: dict[str, list[Run]] = {}
    for name in found:
        runs = [r for r in results if r.scenario == name]
        groups[name] = [Run(name if len(runs) == 1 else f"{name} (run {r.run_id})", r) for r in runs]
    return groups


def expected_jobs(name: str, runs: list[Run]) -> int:
    """The jobs a scenario plans: from its runs, else from the built-in definition."""
    if runs:
        return runs[0].result.total_jobs
    return BUILTIN[name].total_jobs


def section_names(groups: dict[str, list[Run]]) -> list[str]:
    """Every template scenario, then any other scenario run in this session."""
    return list(TEMPLATE_SCENARIOS) + [n for n in groups if n not in TEMPLATE_SCENARIOS]


# ---------------------------------------------------------------- figures across runs


@dataclass
class Totals:
    """Sums, extremes and averages over every run of the session."""

    busy: int = 0
    operations: int = 0
    retries: int = 0
    successful_retries: int = 0
    exhausted: int = 0
    busy_wait: float = 0.0
    enqueued: int = 0
    deleted: int = 0
    left: int = 0
    dead: int = 0
    peak: int = 0
    avg_queue: float = 0.0
    processing_times: list[float] = field(default_factory=list)
    parents_found: int = 0
    parents_expected: int = 0
    children_found: int = 0
    children_expected: int = 0
    orphans: int = 0
    missing_children: int = 0
    progress_mismatches: int = 0
    min_integrity: float = 0.0
    failed_jobs: int = 0
    avg_utilization: float = 0.0
    #: workers in the utilization average (started and processed at least one job), and those left out
    utilization_workers: int = 0
    idle_workers: int = 0
    samples: int = 0
    #: runs whose queue samples missed every message (peak not measured), by label-free scenario name
    unsampled: list[str] = field(default_factory=list)
    #: the most producers and workers that ran at the same time (runs overlap only under xdist)
    max_producers: int = 0
    max_workers: int = 0

    @classmethod
    def of(cls, results: Sequence[RunResult]) -> Totals:
        t = cls()
        utilization: list[float] = []
        queue_sum = 0.0
        for r in results:
            totals = r.retry_totals
            t.busy += totals.busy_events
            t.operations += totals.operations
            t.retries += totals.attempts - totals.operations
            t.successful_retries += totals.successful_retries
            t.exhausted += totals.exhausted
            t.busy_wait += totals.busy_wait_seconds
            t.enqueued += r.messages_enqueued
            t.deleted += max(0, r.messages_deleted)
            t.left += r.messages_left
            t.dead += r.dead_messages
            peak = queue_peak(r)
            if peak is None:
                t.unsampled.append(r.scenario)
            else:
                t.peak = max(t.peak, peak)
            t.samples += len(r.queue_samples)
            queue_sum += sum(s[1] for s in r.queue_samples)
            t.processing_times.extend(r.processing_times)
            i = r.integrity
            t.parents_found += int(i.get("parents_found", 0))
            t.parents_expected += r.parents
            t.children_found += r.children_found
            t.children_expected += r.total_jobs
            t.orphans += int(i.get("orphans", 0))
            t.missing_children += int(i.get("missing_children", 0))
            t.progress_mismatches += len(i.get("progress_mismatches", []))
            t.failed_jobs += r.jobs_failed
            utilization.extend(w.utilization for w in r.workers if w.start_offset is not None and w.jobs)
            t.idle_workers += sum(1 for w in r.workers if w.start_offset is not None and not w.jobs)
        t.utilization_workers = len(utilization)
        t.max_producers = _most_at_once(results, lambda r: r.parents)
        t.max_workers = _most_at_once(results, lambda r: len(r.workers) or int(r.settings.get("workers") or 0))
        t.min_integrity = min((r.hierarchy_integrity for r in results), default=0.0)
        t.avg_queue = queue_sum / t.samples if t.samples else 0.0
        t.avg_utilization = sum(utilization) / len(utilization) if utilization else 0.0
        return t


def _most_at_once(results: Sequence[RunResult], count: Callable[[RunResult], int]) -> int:
    """The largest sum of ``count`` over runs that overlapped in time (runs go one after another
    unless xdist spreads them over processes)."""
    edges = sorted(e for r in results for e in ((r.started_wall, count(r)),
                                                 (r.started_wall + max(r.total_duration, r.execution_time), -count(r))))
    most = running = 0
    for _, change in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running += change
        most = max(most, running)
    return most


def queue_peak(result: RunResult) -> int | None:
    """The highest queue length sampled, or None when the samples missed every message that was enqueued
    (a run shorter than the sampling interval is sampled before its first send and after its last delete)."""
    peak = result.peak_queue_length
    return None if peak == 0 and result.messages_enqueued > 0 else peak


def settings_differ(recorded: dict[str, Any], settings: Settings) -> bool:
    """Whether a run's recorded settings differ from the session's (the database path aside)."""
    session = settings.as_dict()
    return any(session.get(k) != v for k, v in recorded.items() if k in session and k != "db_path")


def fix_comparison(result: RunResult) -> dict[str, Any] | None:
    """``--quaero-compare-fixes``'s entry in ``result.extra``, if any."""
    for key in ("fix_comparison", "compare_fixes"):
        data = result.extra.get(key)
        if isinstance(data, dict):
            return data
    return None


def before_fixes(result: RunResult) -> dict[str, Any] | None:
    """The all-fixes-off figures of --quaero-compare-fixes, if that run produced a count."""
    data = fix_comparison(result)
    if data is None:
        return None
    nested = data.get("before")
    before: dict[str, Any] = nested if isinstance(nested, dict) else data
    busy = before.get("busy_errors")
    if isinstance(busy, bool) or not isinstance(busy, (int, float)):
        return None
    return before


def comparison_error(result: RunResult) -> str | None:
    """Why the before-fixes run failed, if it did."""
    data = fix_comparison(result)
    before = data.get("before") if data else None
    return str(before["error"]) if isinstance(before, dict) and before.get("error") else None


def find_query(result: RunResult, title: str) -> dict[str, Any] | None:
    """The integrity query ``title`` the run recorded (``sql`` and ``rows``), if any."""
    queries: list[dict[str, Any]] = result.integrity.get("queries", [])
    for query in queries:
        if query.get("title") == title:
            return query
    return None


def query_problems(result: RunResult) -> list[str]:
    """What the run's recorded integrity queries contradict (orphans, parents without their children)."""
    problems: list[str] = []
    orphans = find_query(result, "Verify no orphaned children")
    if orphans is not None and orphans["rows"] and int(orphans["rows"][0][0]):
        problems.append(f"{int(orphans['rows'][0][0])} orphaned children")
    for title, column in (("Verify no missing expected children", 1), ("Job Hierarchy Validation Query", 2)):
        query = find_query(result, title)
        if query is None:
            continue
        rows = query["rows"]
        wrong = sum(1 for row in rows if int(row[column]) != result.children_per_parent)
        missing = result.parents - len(rows)
        if wrong or missing > 0:
            problems.append(f"{title}: {wrong} of {len(rows)} parents lack their {result.children_per_parent} "
                            f"children, {max(0, missing)} parents have none")
            break  # both queries count the same children: one sentence
    return problems


def queue_intervals(samples: Sequence[Sequence[float]]) -> tuple[float, float]:
    """(sampling interval, display step) of a run's queue samples: the step fits in MAX_QUEUE_ROWS rows.

    The interval is the median gap between samples, the real cadence (the monitor samples
    less often when counting the queue gets expensive).
    """
    offsets = [s[0] for s in samples]
    gaps = [b - a for a, b in pairwise(offsets) if b > a]
    # the last gap ends when the queue drained, not when a sample was due: it says nothing of the cadence
    cadence = sorted(gaps[:-1] or gaps)
    interval = cadence[len(cadence) // 2] if cadence else 0.25
    end = offsets[-1]
    for step in _NICE_STEPS:
        # a cadence a hair over a nice step (0.2502s) still shows at that step
        if step >= interval * 0.95 and end / step <= MAX_QUEUE_ROWS:
            return interval, step
    return interval, _NICE_STEPS[-1]


# ---------------------------------------------------------------- the whole report's figures


class ReportFigures:
    """Everything the sections read, computed once from a :class:`ReportContext`."""

    def __init__(self, ctx: ReportContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        #: runs tests made with settings or a tree of their own: their tests judge them, the template does not
        self.own: list[tuple[RunResult, str]] = [(r, why) for r in ctx.results
                                                  if (why := own_settings(r, ctx.settings)) is not None]
        own = {id(r) for r, _ in self.own}
        #: the runs the template's figures, verdict and scaling are about
        self.results = [r for r in ctx.results if id(r) not in own]
        self.groups = group_by_scenario(self.results)
        #: every run, in the report's order (template scenarios first)
        self.runs = [run for runs in self.groups.values() for run in runs]
        self.failed = failed_verdicts(self.results)
        #: what the database's locks are called: the backends these runs used (the session's when none ran)
        self.words = words_for(self.results, ctx.settings)
        self.totals = Totals.of(self.results)
        self.scaling = measure_scaling(self.runs, ctx.settings)
        self.claims = self._claims()

    def _claims(self) -> list[str]:
        """The template's production-readiness claims these runs do not meet, beyond failed criteria.

        Each is something the report marks with a cross (the scaling rule, the readiness list, the
        detection checks), so an approval can never stand beside one. A claim that a failed
        criterion already states is left to that criterion.
        """
        if not self.results:
            return []
        t, failed = self.totals, {v.get("criterion") for _, v in self.failed}
        claims: list[str] = []
        if self.scaling.linear is False:
            claims.append(f"Linear performance scaling: {self.scaling.verdict_text}")
        if t.busy and "sqlite_busy_errors" not in failed:
            claims.append(f"{self.words.zero}: {t.busy} lock errors")
        if (t.deleted != t.enqueued or t.left) and "queue_deletion" not in failed:
            claims.append(f"100% queue message deletion: {t.deleted}/{t.enqueued} deleted, {t.left} left "
                          f"({t.dead} dead)")
        if (t.min_integrity < 100.0 or t.orphans or t.missing_children or t.children_found != t.children_expected) \
                and "hierarchy_integrity" not in failed:
            claims.append(f"100% job hierarchy integrity: {t.min_integrity:.1f}% at worst, {t.orphans} orphans, "
                          f"{t.missing_children} missing children, {t.children_found}/{t.children_expected} "
                          "children found")
        if t.exhausted:
            claims.append(f"Robust retry logic: {t.exhausted} operations gave up after every retry")
        if t.progress_mismatches:
            claims.append(f"Progress tracking: {t.progress_mismatches} parents' counters disagree with their "
                          "children")
        for run in self.runs:
            claims += [f"{run.label} hierarchy query: {problem}" for problem in query_problems(run.result)]
            claims += [f"{run.label} {check.name}: {check.brief}" for check in detection_checks(run.result)
                       if check.found]
        return claims

    @property
    def blockers(self) -> list[str]:
        """Everything that stands between these runs and approval: failed criteria, then unmet claims."""
        return [describe_failure(v, self.label(r)) for r, v in self.failed] + self.claims

    @property
    def overall_passed(self) -> bool:
        return bool(self.results) and not self.failed and not self.claims

    @property
    def criteria_count(self) -> int:
        """Verdicts judged across every run."""
        return sum(len(r.verdicts) for r in self.results)

    @property
    def pragmas(self) -> dict[str, Any]:
        """The pragmas the first run read back from SQLite ({} when nothing ran)."""
        return self.results[0].pragmas if self.results else {}

    @property
    def labels(self) -> list[str]:
        return [run.label for run in self.runs]

    def label(self, result: RunResult) -> str:
        """The label of ``result`` in this report."""
        for run in self.runs:
            if run.result is result:
                return run.label
        return result.scenario

    def missing_template_scenarios(self) -> list[str]:
        return [n for n in TEMPLATE_SCENARIOS if n not in self.groups]

    def retry_attempts(self, ops: tuple[str, ...] | None) -> tuple[int, int]:
        """(operations, attempts) of the named retry operations (None: every operation), over every run."""
        operations = attempts = 0
        for result in self.results:
            for op, data in result.retry.items():
                if ops is None or op in ops:
                    operations += int(data.get("operations", 0))
                    attempts += int(data.get("attempts", 0))
        return operations, attempts
