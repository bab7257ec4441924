"""The figures the Markdown report prints, computed from :class:`RunResult` objects.

Pure functions over results, no I/O and no report state: totals across runs, the
scaling rule, the queue-over-time steps, the ``--quaero-compare-fixes`` lookups, the
integrity queries' results, grouping by scenario, and the small formatting helpers
that turn numbers into the template's wording. :mod:`pytest_quaero.report.markdown` writes
the sections from them; the underscore names are that module's, not the plugin's API.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_quaero.core.metrics import RunResult, WorkerRecord
from pytest_quaero.core.scenarios import BUILTIN
from pytest_quaero.core.settings import Settings, parse_duration

__all__ = [
    "FAIL_ICON",
    "LINEAR_MIN_FACTOR",
    "MAX_QUEUE_ROWS",
    "NONE_ICON",
    "PASS_ICON",
    "TEMPLATE_SCENARIOS",
    "not_measured",
]

TEMPLATE_SCENARIOS = ("light", "medium", "heavy")
#: a larger load scales "linearly" when its throughput is at least this share of the smallest load's
LINEAR_MIN_FACTOR = 0.8
#: Queue Length Over Time shows at most this many steps; the step grows to fit (30s for a 5-minute run)
MAX_QUEUE_ROWS = 10
_NICE_STEPS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
_MAX_SQL_ROWS = 20
PASS_ICON, FAIL_ICON, NONE_ICON = "✅", "❌", "➖"


# ---------------------------------------------------------------- small formatting helpers


def not_measured(why: str) -> str:
    return f"not measured: {why}"


def _not_run(name: str) -> str:
    return not_measured(f"{name} was not run in this session (run with --quaero-scenario={name} or --quaero-scenario=all)")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 120:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m {seconds % 60:04.1f}s"


def _offset(seconds: float) -> str:
    """``t+MM:SS.mmm``: the template's timeline stamps, with milliseconds for short runs."""
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"t+{int(minutes):02d}:{rest:06.3f}"


def _pct(value: float) -> str:
    return f"{value:.1f}%"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _status(passed: bool) -> str:
    return f"{PASS_ICON} PASS" if passed else f"{FAIL_ICON} FAIL"


def _mark(ok: bool | None) -> str:
    return NONE_ICON if ok is None else (PASS_ICON if ok else FAIL_ICON)


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural or singular + 's')}"


def _names(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _utc(wall: float, millis: bool = False) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
    return f"{stamp}.{int(wall % 1 * 1000):03d}Z" if millis else stamp + "Z"


def _verdict(result: RunResult, key: str) -> dict[str, Any] | None:
    for verdict in result.verdicts:
        if verdict.get("criterion") == key:
            return verdict
    return None


def _failed(results: Iterable[RunResult]) -> list[tuple[RunResult, dict[str, Any]]]:
    return [(r, v) for r in results for v in r.verdicts if not v.get("passed")]


def _describe_failure(verdict: dict[str, Any], label: str) -> str:
    """Short: the summary names the numbers; the critical-issues list adds each verdict's detail."""
    return f"{label} {verdict['title']} (measured {verdict['measured']}, required {verdict['required']})"


def _worker_name(worker: WorkerRecord) -> str:
    return f"Worker {worker.index + 1}"


def _stagger_tolerance(verdict: dict[str, Any] | None) -> float | None:
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
class _Run:
    label: str
    result: RunResult


def _group(results: Sequence[RunResult]) -> dict[str, list[_Run]]:
    """Scenario name -> its runs, template scenarios first; repeated runs get their run id in the label."""
    names: list[str] = [n for n in TEMPLATE_SCENARIOS if any(r.scenario == n for r in results)]
    names += [r.scenario for r in results if r.scenario not in names and r.scenario not in TEMPLATE_SCENARIOS]
    names = list(dict.fromkeys(names))
    groups: dict[str, list[_Run]] = {}
    for name in names:
        runs = [r for r in results if r.scenario == name]
        groups[name] = [_Run(name if len(runs) == 1 else f"{name} (run {r.run_id})", r) for r in runs]
    return groups


def _title(name: str, jobs: int, *, lower: bool = False) -> str:
    return f"{name.capitalize()} Load Test ({jobs} {'jobs' if lower else 'Jobs'})"


def _expected_jobs(name: str, runs: list[_Run]) -> int:
    if runs:
        return runs[0].result.total_jobs
    return BUILTIN[name].total_jobs


def _section_names(groups: dict[str, list[_Run]]) -> list[str]:
    """Every template scenario, then any other scenario run in this session."""
    return list(TEMPLATE_SCENARIOS) + [n for n in groups if n not in TEMPLATE_SCENARIOS]



# ---------------------------------------------------------------- figures across runs


@dataclass
class _Totals:
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
    samples: int = 0

    @classmethod
    def of(cls, results: Sequence[RunResult]) -> _Totals:
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
            t.peak = max(t.peak, r.peak_queue_length)
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
            utilization.extend(w.utilization for w in r.workers if w.start_offset is not None)
        t.min_integrity = min((r.hierarchy_integrity for r in results), default=0.0)
        t.avg_queue = queue_sum / t.samples if t.samples else 0.0
        t.avg_utilization = sum(utilization) / len(utilization) if utilization else 0.0
        return t


def _differs(recorded: dict[str, Any], settings: Settings) -> bool:
    session = settings.as_dict()
    return any(session.get(k) != v for k, v in recorded.items() if k in session and k != "db_path")


def _comparison(result: RunResult) -> dict[str, Any] | None:
    for key in ("fix_comparison", "compare_fixes"):
        data = result.extra.get(key)
        if isinstance(data, dict):
            return data
    return None


def _before_fixes(result: RunResult) -> dict[str, Any] | None:
    """The all-fixes-off figures of --quaero-compare-fixes, if that run produced a count."""
    data = _comparison(result)
    if data is None:
        return None
    before = data.get("before") if isinstance(data.get("before"), dict) else data
    busy = before.get("busy_errors")
    if isinstance(busy, bool) or not isinstance(busy, (int, float)):
        return None
    return before


def _comparison_error(result: RunResult) -> str | None:
    data = _comparison(result)
    before = data.get("before") if data else None
    return str(before["error"]) if isinstance(before, dict) and before.get("error") else None


def _query(result: RunResult, title: str) -> dict[str, Any] | None:
    for query in result.integrity.get("queries", []):
        if query.get("title") == title:
            return query
    return None


def _child_count_result(run: _Run, query: dict[str, Any]) -> list[str]:
    r = run.result
    rows = query["rows"]
    expected = r.children_per_parent
    wrong = [row for row in rows if int(row[1]) != expected]
    missing = r.parents - len(rows)
    ok = not wrong and missing == 0
    counts = sorted({int(row[1]) for row in rows})
    text = (f"-- Result ({run.label}, run {r.run_id}): {len(rows)} parents with children, child_count "
            f"{'/'.join(map(str, counts)) or 'none'} (expected {expected} each)")
    lines = [text + f" {_mark(ok)}"]
    if ok:
        lines.append(f"-- All {r.parents} parent jobs have the expected {expected} children {PASS_ICON}")
    else:
        for row in wrong[:10]:
            lines.append(f"--   {row[0]}: {row[1]} children, expected {expected} {FAIL_ICON}")
        if missing > 0:
            lines.append(f"--   {missing} parents have no child rows at all {FAIL_ICON}")
    return lines


def _query_result(run: _Run, title: str) -> list[str]:
    r = run.result
    query = _query(r, title)
    params = (f"run = '{r.run_id}-*', queue = '{r.settings.get('queue_name')}', "
              f"max_receive = {r.settings.get('max_receive')}")
    if query is None:
        return [f"Result ({run.label}): " + not_measured("this run recorded no such query")]
    rows = query["rows"]
    lines = [f"Result ({run.label}; parameters {params}):"]
    if title == "Queue Statistics Query":
        if not rows:
            lines.append(f"no rows: the goqite table holds no message of queue {r.settings.get('queue_name')!r} "
                         f"{PASS_ICON} All messages processed ({r.messages_enqueued} were enqueued in this run)")
        for row in rows:
            pending, dead = int(row[1]), int(row[2])
            lines += [f"queue_name: {row[0]}",
                      f"pending_messages: {pending}  {_mark(pending == 0)} "
                      + ("All messages processed" if pending == 0 else "messages left in the queue"),
                      f"dead_messages: {dead}  {_mark(dead == 0)}",
                      f"messages enqueued in this run: {r.messages_enqueued}"]
        return lines
    if title == "Job Hierarchy Validation Query":
        lines.append("parent_id | parent_name | child_count")
        lines += [" | ".join(str(c) for c in row) for row in rows[:_MAX_SQL_ROWS]]
        if len(rows) > _MAX_SQL_ROWS:
            lines.append(f"... {len(rows) - _MAX_SQL_ROWS} more rows")
        wrong = [row for row in rows if int(row[2]) != r.children_per_parent]
        if rows and not wrong and len(rows) == r.parents:
            lines.append(f"All {r.parents} parents have the expected {r.children_per_parent} children {PASS_ICON}")
        else:
            lines.append(f"{len(wrong)} of {len(rows)} parents lack the expected {r.children_per_parent} children; "
                         f"{r.parents - len(rows)} parents missing {FAIL_ICON}")
        return lines
    lines.append("id | status | total | completed | failed | pending | children_completed | children_failed | children")
    lines += [" | ".join(str(c) for c in row) for row in rows[:_MAX_SQL_ROWS]]
    if len(rows) > _MAX_SQL_ROWS:
        lines.append(f"... {len(rows) - _MAX_SQL_ROWS} more rows")
    mismatches = len(r.integrity.get("progress_mismatches", []))
    lines.append(f"{mismatches} parents whose counters disagree with their children {_mark(mismatches == 0)}")
    return lines


def _queue_step(duration: float, sample_interval: float) -> float:
    for step in _NICE_STEPS:
        if step >= sample_interval and duration / step <= MAX_QUEUE_ROWS:
            return step
    return _NICE_STEPS[-1]


def _queue_over_time(run: _Run) -> list[str]:
    r = run.result
    samples = r.queue_samples
    header = f"{run.label}: Queue Length Over Time"
    if not samples:
        return [header + ":", "  " + not_measured("the run recorded no queue sample")]
    offsets = [s[0] for s in samples]
    interval = min((b - a for a, b in zip(offsets, offsets[1:]) if b > a), default=0.25)
    end = offsets[-1]
    step = _queue_step(end, interval)
    label = (lambda t: f"t+{t:g}s")
    lines = [f"{header} (sampled every {interval:.2f}s; shown every {step:g}s, the step that fits the run in at "
             f"most {MAX_QUEUE_ROWS} rows; the template's 30s for a 5-minute run):"]
    k = 0
    while k * step < end:
        t = k * step
        at = [s for s in samples if s[0] <= t + 1e-9]
        sample = at[-1] if at else samples[0]
        lines.append(f"  {label(t) + ':':<9} {int(sample[1])} messages ({int(sample[2])} visible, "
                     f"{int(sample[3])} in flight)")
        k += 1
    last = samples[-1]
    left = int(last[1])
    lines.append(f"  t+end ({end:.2f}s): {left} messages "
                 + ("(all processed)" if left == 0 else f"left ({r.dead_messages} dead)"))
    lines += ["", f"Peak Queue Length: {r.peak_queue_length} messages",
              f"Average Queue Length: {r.avg_queue_length:.1f} messages"]
    return lines


@dataclass
class _Scaling:
    rows: list[str]
    linear: bool | None
    verdict_text: str
    characteristic: str
    largest: int
    rule: str


def _scaling(groups: dict[str, list[_Run]]) -> _Scaling:
    """Throughput against load size: factor = throughput / the smallest load's throughput."""
    rule = (f"linear when every larger load's throughput is at least {LINEAR_MIN_FACTOR:.0%} of the smallest "
            "load's (scaling factor >= " f"{LINEAR_MIN_FACTOR}), i.e. total time grows in proportion to the jobs")
    measured: list[tuple[int, float, str]] = []
    for runs in groups.values():
        for run in runs:
            measured.append((run.result.total_jobs, run.result.throughput, run.label))
    base = min(measured, key=lambda m: m[0]) if measured else None
    rows: list[str] = []
    for name in _section_names(groups):
        runs = groups.get(name, [])
        jobs = _expected_jobs(name, runs)
        if not runs:
            rows.append(f"  {f'{jobs} jobs':<10}→ {_not_run(name)}")
            continue
        for run in runs:
            r = run.result
            line = f"  {f'{r.total_jobs} jobs':<10}→ {r.throughput:.1f} jobs/sec"
            if base is not None and r.total_jobs != base[0] and base[1] > 0:
                line += f" (SCALING FACTOR: {r.throughput / base[1]:.2f} vs {base[2]})"
            elif base is not None and r.total_jobs == base[0]:
                line += " (the base of the scaling factors)"
            rows.append(line)
    sizes = sorted({m[0] for m in measured})
    largest = sizes[-1] if sizes else 0
    if len(sizes) < 2 or base is None or base[1] <= 0:
        why = ("needs at least two scenarios of different size in one session; run with --quaero-scenario=all"
               if len(sizes) < 2 else "the smallest load completed no job")
        return _Scaling(rows, None, not_measured(why), not_measured(why), largest, rule)
    factors = [(m[1] / base[1], m[2]) for m in measured if m[0] != base[0]]
    worst = min(factors)
    linear = worst[0] >= LINEAR_MIN_FACTOR
    verdict = (f"{'YES' if linear else 'NO'} (lowest scaling factor {worst[0]:.2f}, {worst[1]}, against "
               f"{LINEAR_MIN_FACTOR})")
    characteristic = (f"System throughput scales linearly with job count: {verdict}" if linear else
                      f"System throughput does NOT scale linearly with job count: {verdict}")
    return _Scaling(rows, linear, verdict, characteristic, largest, rule)
