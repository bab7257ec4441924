"""Comparing a run with its baseline: which figures can be gated, the rules, the table.

Rules such as ``throughput:10%`` (relative) or ``retries:+50`` (absolute) say how much
worse than the baseline a figure may get. Every metric knows which direction is worse;
only worse fails. Counts that must stay zero (busy errors, duplicates, lost jobs) stay
absolute criteria of the run itself; a baseline only gates what has no fixed bound,
such as speed. Where baselines are kept is :mod:`pytest_quaero.core.baseline`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_quaero.core.counts import SERVER_ROWS, server_rows_per_job
from pytest_quaero.core.fields import parse_duration
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.noise import band
from pytest_quaero.core.table import aligned

__all__ = [
    "METRICS",
    "BaselineError",
    "CompareRule",
    "Comparison",
    "Metric",
    "MetricRow",
    "compare",
    "default_rules",
    "format_table",
    "parse_rules",
    "scenario_key",
]


class BaselineError(ValueError):
    """A rule, a baseline file or a save that cannot be used; the message says which."""


# ---------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Metric:
    """A figure a baseline can gate, and which way it gets worse."""

    name: str
    title: str
    unit: str
    #: True when a higher value is a regression (time, retries); False for throughput
    higher_is_worse: bool
    value: Callable[[RunResult], float | None]
    #: seconds: absolute limits may be written as durations (``p95:+50ms``)
    is_duration: bool = False
    #: counted, not timed (:mod:`~pytest_quaero.core.counts`): gated exactly unless a rule says otherwise
    counted: bool = False
    #: counted by the database server: no row at all where the backend keeps no such counters (SQLite)
    server: bool = False

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.is_duration:
            return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"
        if self.unit == "jobs/s":
            return f"{value:.1f} jobs/s"
        if self.counted:
            return f"{value:.4g}"
        return f"{value:g}"


def _retries(result: RunResult) -> float:
    """Attempts beyond each operation's first: every retry the run needed."""
    totals = result.retry_totals
    return float(max(0, totals.attempts - totals.operations))


def _counted(key: str, scope: str = "per_job") -> Callable[[RunResult], float | None]:
    def value(result: RunResult) -> float | None:
        counts = result.extra.get("counts") if isinstance(result.extra, dict) else None
        if not counts:
            return None  # a result from before counts were kept: nothing to compare
        return float(counts[scope][key])

    return value


#: the counted metrics, each gated exactly (``+0``) by default when a baseline is compared
COUNTED = (
    Metric("statements_per_job", "SQL Statements per Job", "", True, _counted("statements"), counted=True),
    Metric("write_transactions_per_job", "Write Transactions per Job", "", True, _counted("write_transactions"),
           counted=True),
    Metric("rows_changed_per_job", "Rows Changed per Job", "", True, _counted("rows_changed"), counted=True),
    Metric("rollbacks_per_job", "Rollbacks per Job", "", True, _counted("rollbacks"), counted=True),
    Metric("connections", "Connections Opened", "", True, _counted("connections", "total"), counted=True),
)

def _server_counted(key: str) -> Callable[[RunResult], float | None]:
    def value(result: RunResult) -> float | None:
        per_job = server_rows_per_job(result.extra) if isinstance(result.extra, dict) else None
        return None if per_job is None else float(per_job[key])

    return value


#: counted by the database server itself (PostgreSQL's pg_stat_user_tables, the run's own schema):
#: what every client did, a worker command in any language included, with no client traced
SERVER_COUNTED = (
    Metric("server_rows_inserted_per_job", "Rows Inserted per Job (server)", "", True,
           _server_counted("rows_inserted"), counted=True, server=True),
    Metric("server_rows_updated_per_job", "Rows Updated per Job (server)", "", True,
           _server_counted("rows_updated"), counted=True, server=True),
    Metric("server_rows_deleted_per_job", "Rows Deleted per Job (server)", "", True,
           _server_counted("rows_deleted"), counted=True, server=True),
)

METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("throughput", "Throughput", "jobs/s", False, lambda r: r.throughput),
        Metric("execution_time", "Execution Time", "s", True, lambda r: r.execution_time, True),
        Metric("p95", "Processing Time p95", "s", True, lambda r: r.p95, True),
        Metric("latency_p95", "Enqueue-to-Done Latency p95", "s", True, lambda r: r.latency_p95, True),
        Metric("avg_processing_time", "Average Processing Time", "s", True, lambda r: r.avg_processing_time, True),
        Metric("retries", "Retries", "", True, _retries),
        Metric("busy_errors", "SQLITE_BUSY Errors", "", True, lambda r: float(r.busy_errors)),
        Metric("redeliveries", "Redeliveries", "", True, lambda r: float(r.redeliveries)),
        *COUNTED,
        *SERVER_COUNTED,
    )
}
_ALIASES = {"busy": "busy_errors", "latency": "latency_p95", "time": "execution_time", "retry": "retries"}


# ---------------------------------------------------------------- rules

_RULE = re.compile(r"^\s*(?P<metric>[a-z_0-9]+)\s*:\s*(?P<limit>\S+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class CompareRule:
    """``throughput:10%`` or ``retries:+50``: how much worse than the baseline is allowed."""

    metric: Metric
    #: "percent" (relative to the baseline) or "absolute" (in the metric's unit)
    kind: str
    limit: float
    text: str

    def bound(self, before: float) -> float:
        """The worst value that still passes, given the baseline value."""
        sign = 1.0 if self.metric.higher_is_worse else -1.0
        if self.kind == "percent":
            return before * (1.0 + sign * self.limit / 100.0)
        return before + sign * self.limit

    def passes(self, before: float, now: float) -> bool:
        bound = self.bound(before)
        if self.metric.higher_is_worse:
            return now <= bound + 1e-12
        return now >= bound - 1e-12

    def describe_bound(self, before: float) -> str:
        bound = self.bound(before)
        op = "<=" if self.metric.higher_is_worse else ">="
        if self.kind == "percent":
            sign = "+" if self.metric.higher_is_worse else "-"
            return f"{op} {self.metric.format(max(bound, 0.0))} ({sign}{self.limit:g}%)"
        shown = f"{self.limit * 1000:g}ms" if self.metric.is_duration else f"{self.limit:g}"
        sign = "+" if self.metric.higher_is_worse else "-"
        return f"{op} {self.metric.format(max(bound, 0.0))} ({sign}{shown})"


def _parse_limit(metric: Metric, text: str, where: str) -> tuple[str, float]:
    limit = text.strip()
    if limit.endswith("%"):
        try:
            value = float(limit[:-1])
        except ValueError:
            raise BaselineError(f"{where}: {limit!r} is not a percentage") from None
        if value < 0 or not math.isfinite(value):
            raise BaselineError(f"{where}: a percentage must be >= 0")
        return "percent", value
    if re.fullmatch(r"\d+(\.\d+)?", limit) and metric.counted:
        limit = "+" + limit  # statements_per_job:0 reads as "not one more"
    if not limit.startswith("+"):
        raise BaselineError(
            f"{where}: write a relative limit as N% (e.g. {metric.name}:10%) or an absolute one as +N "
            f"(e.g. {metric.name}:+{'50ms' if metric.is_duration else '5'})"
        )
    amount = limit[1:]
    if metric.is_duration and re.search(r"[a-z]$", amount, re.IGNORECASE):
        try:
            return "absolute", parse_duration(amount)
        except ValueError:
            raise BaselineError(f"{where}: {amount!r} is not a duration such as 50ms or 1s") from None
    try:
        value = float(amount)
    except ValueError:
        raise BaselineError(f"{where}: {amount!r} is not a number") from None
    if value < 0 or not math.isfinite(value):
        raise BaselineError(f"{where}: an absolute limit must be >= 0")
    return "absolute", value


def parse_rules(texts: Sequence[str] | str, *, option: str = "--quaero-compare-fail") -> list[CompareRule]:
    """``["throughput:10%,p95:25%", "retries:+50"]`` -> rules; a later rule for a metric wins."""
    if isinstance(texts, str):
        texts = [texts]
    rules: dict[str, CompareRule] = {}
    for text in texts:
        for part in text.split(","):
            if not part.strip():
                continue
            where = f"{option}={part.strip()}"
            match = _RULE.match(part)
            if match is None:
                raise BaselineError(
                    f"{where}: expected METRIC:N% or METRIC:+N, e.g. throughput:10%,p95:25%,retries:+50; "
                    f"metrics: {', '.join(METRICS)}"
                )
            name = match["metric"].lower()
            metric = METRICS.get(_ALIASES.get(name, name))
            if metric is None:
                raise BaselineError(f"{where}: unknown metric {name!r}; allowed: {', '.join(METRICS)}")
            kind, limit = _parse_limit(metric, match["limit"], where)
            rules[metric.name] = CompareRule(metric, kind, limit, part.strip())
    return list(rules.values())


# ---------------------------------------------------------------- comparing


@dataclass(frozen=True)
class MetricRow:
    """One line of a comparison: before, now, change and (if a rule applies) the limit."""

    metric: str
    title: str
    before: float
    now: float
    before_text: str
    now_text: str
    change: str
    limit: str
    #: None when no rule gates this metric (shown for information only)
    passed: bool | None
    #: how far the two runs may differ from noise alone (time metrics; see core/noise.py), e.g. "±7.1%"
    noise: str = ""

    @property
    def status(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "title": self.title, "before": self.before, "now": self.now,
            "before_text": self.before_text, "now_text": self.now_text, "change": self.change,
            "limit": self.limit, "passed": self.passed, "status": self.status, "noise": self.noise,
        }


@dataclass
class Comparison:
    """A run compared with its baseline."""

    key: str
    rows: list[MetricRow] = field(default_factory=list)
    #: rules tighter than the noise the two runs measured: they would call noise a regression
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricRow]:
        return [row for row in self.rows if row.passed is False]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def summary(self) -> str:
        gated = [row for row in self.rows if row.passed is not None]
        if not gated:
            return "nothing to gate (no counts in the baseline, no --quaero-compare-fail rule)"
        if self.regressed:
            return "; ".join(f"{row.metric} {row.now_text} vs {row.before_text} ({row.change})"
                             for row in self.regressions)
        return f"{len(gated)} metric{'s' if len(gated) != 1 else ''} within limits"


def _change(before: float, now: float) -> str:
    if before == 0:
        return "±0" if now == 0 else "new"
    return f"{(now - before) / before * 100:+.1f}%"


def default_rules() -> list[CompareRule]:
    """Every counted metric exactly: one more statement, transaction, row or connection is a regression."""
    return [CompareRule(metric, "absolute", 0.0, f"{metric.name}:+0") for metric in (*COUNTED, *SERVER_COUNTED)]


def compare(before: RunResult, now: RunResult, rules: Sequence[CompareRule]) -> Comparison:
    """Every metric before and now; the ruled ones pass or fail, in the rules' direction.

    The counted metrics are gated exactly (:func:`default_rules`) unless ``rules`` names them;
    a baseline without counts (recorded before they were kept) leaves them ungated.
    """
    ruled = {rule.metric.name: rule for rule in (*default_rules(), *rules)}
    comparison = Comparison(scenario_key(now))
    for metric in METRICS.values():
        old_value, new_value = metric.value(before), metric.value(now)
        rule = ruled.get(metric.name)
        if old_value is None and new_value is None and metric.server:
            continue  # neither run's backend counts on the server: not a gap worth a row
        if old_value is None or new_value is None:
            comparison.rows.append(MetricRow(metric.name, metric.title, 0.0, 0.0,
                                             metric.format(old_value), metric.format(new_value), "-",
                                             "not counted in both runs" if rule else "", None))
            continue
        old, new = float(old_value), float(new_value)
        change = _change(old, new)
        if metric.counted and new != old:
            change += _where_server_counts_moved(before, now) if metric.server else _where_counts_moved(before, now)
        spread = band(_noise(before, metric.name), _noise(now, metric.name))
        passed = rule.passes(old, new) if rule else None
        if passed is False and spread is not None and old and abs(new - old) / abs(old) * 100 <= spread:
            passed = True  # worse by less than the two runs' own noise: not a regression anyone can tell
        if rule is not None and rule.kind == "percent" and spread is not None and rule.limit < spread:
            comparison.warnings.append(
                f"{comparison.key}: {rule.text} is tighter than the noise these two runs measured of "
                f"{metric.name} (±{spread:.1f}%): it fails only beyond that; gate counts instead (exact)")
        comparison.rows.append(MetricRow(
            metric.name, metric.title, old, new, metric.format(old), metric.format(new), change,
            rule.describe_bound(old) if rule else "", passed, f"±{spread:.1f}%" if spread is not None else "",
        ))
    return comparison


def _noise(result: RunResult, metric: str) -> float | None:
    value = result.extra.get("noise", {}).get(metric) if isinstance(result.extra, dict) else None
    return float(value) if value is not None else None


def _where_counts_moved(before: RunResult, now: RunResult) -> str:
    """Which operation's which statements per job changed: `` (queue_receive: select +1 per job)``."""
    old_ops = before.extra["counts"].get("operations", {})
    new_ops = now.extra["counts"].get("operations", {})
    old_jobs = max(1, int(before.extra["counts"].get("jobs", 1)))
    new_jobs = max(1, int(now.extra["counts"].get("jobs", 1)))
    moves = []
    for op in sorted(set(old_ops) | set(new_ops)):
        old, new = old_ops.get(op, {}), new_ops.get(op, {})
        for key in ("select", "insert", "update", "delete", "begin", "commit", "rollback", "other", "connections"):
            delta = new.get(key, 0) / new_jobs - old.get(key, 0) / old_jobs
            if abs(delta) >= 1e-4:
                unit = "connections" if key == "connections" else key
                moves.append(f"{op}: {unit} {delta:+.4g} per job")
    return f" ({'; '.join(moves[:4])})" if moves else ""


def _where_server_counts_moved(before: RunResult, now: RunResult) -> str:
    """Which table's rows per job moved, as the server counted them: `` (crawl_jobs: updated +1 per job)``."""
    def per_table(result: RunResult) -> dict[str, dict[str, float]]:
        stats = result.extra.get("postgresql", {}).get("stats", {})
        jobs = max(1, int(result.total_jobs))
        return {table: {key: float(data.get(key, 0)) / jobs for key in SERVER_ROWS}
                for table, data in stats.get("tables", {}).items()}

    old_tables, new_tables = per_table(before), per_table(now)
    moves = []
    for table in sorted(set(old_tables) | set(new_tables)):
        for key in SERVER_ROWS:
            delta = new_tables.get(table, {}).get(key, 0.0) - old_tables.get(table, {}).get(key, 0.0)
            if abs(delta) >= 1e-4:
                moves.append(f"{table}: {key.removeprefix('rows_')} {delta:+.4g} per job")
    return f" ({'; '.join(moves[:4])})" if moves else ""


_TABLE_HEADERS = ("metric", "before", "now", "change", "noise", "limit", "status")


def format_table(rows: Sequence[MetricRow] | Sequence[Mapping[str, Any]], *, gated_only: bool = False) -> list[str]:
    """Aligned text lines: metric, before, now, change, noise, limit, status."""
    cells: list[tuple[str, ...]] = []
    for row in rows:
        data = row.as_dict() if isinstance(row, MetricRow) else row
        if gated_only and data["passed"] is None:
            continue
        cells.append((data["metric"], data["before_text"], data["now_text"], data["change"], data.get("noise") or "-",
                      data["limit"] or "-", data["status"]))
    return aligned([_TABLE_HEADERS, *cells])


def scenario_key(result: RunResult | Mapping[str, Any]) -> str:
    """``light-5x20``: the scenario's name and shape; ``light-5x20@postgresql`` on PostgreSQL.

    The backend is part of the key: the same queue does other statements on another database,
    so a SQLite baseline never gates a PostgreSQL run (nor the other way round).
    """
    if isinstance(result, RunResult):
        name, parents, children, settings = (result.scenario, result.parents, result.children_per_parent,
                                             result.settings)
    else:
        name, parents, children = result["scenario"], result["parents"], result["children_per_parent"]
        settings = result.get("settings") or {}
    backend = settings.get("backend") if isinstance(settings, Mapping) else None
    return f"{name}-{parents}x{children}" + (f"@{backend}" if backend and backend != "sqlite" else "")
