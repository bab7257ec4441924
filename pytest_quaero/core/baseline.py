"""Baselines: store a run's result, compare a later run against it, gate on regressions.

A baseline store is one results document (:mod:`pytest_quaero.core.results_json`, the same
format ``--quaero-json`` writes) holding the results of many scenarios and machines.
Each stored result is found by two keys:

* the **scenario key** ``light-5x20``: name and shape, so a custom scenario that reuses a
  name with another shape is never compared with the old one;
* the **machine fingerprint** ``Linux-x86_64-CPython-3.11-sqlite3.40.1-2cpu``: only what
  does not jitter between runs on one machine (no CPU clock, no host name, which CI
  runners change every run). ``QUAERO_BASELINE_MACHINE`` replaces it with a name of
  your own, e.g. one shared by a fleet of identical runners.

Saving reads, merges and rewrites the store under a lock file (``fcntl.flock`` where
it exists, an ``O_EXCL`` lock file elsewhere) and replaces it atomically, so xdist
workers that save at the same moment each add their scenario and none is lost.

Comparing uses rules such as ``throughput:10%`` (relative) or ``retries:+50``
(absolute). Every metric knows which direction is worse; only worse fails. Counts that
must stay zero (busy errors, duplicates, lost jobs) stay absolute criteria of the run
itself; a baseline only gates what has no fixed bound, such as speed.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.settings import DEFAULT_BASELINE_STORE

__all__ = [
    "DEFAULT_STORE",
    "METRICS",
    "BaselineError",
    "BaselineStore",
    "Comparison",
    "CompareRule",
    "Metric",
    "MetricRow",
    "StoredBaseline",
    "compare",
    "document_fingerprint",
    "fingerprint",
    "format_table",
    "load_results",
    "parse_rules",
    "scenario_key",
]

#: where ``--quaero-save-baseline`` with no value keeps baselines, relative to the rootdir
DEFAULT_STORE = DEFAULT_BASELINE_STORE


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
    value: Callable[[RunResult], float]
    #: seconds: absolute limits may be written as durations (``p95:+50ms``)
    is_duration: bool = False

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.is_duration:
            return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"
        if self.unit == "jobs/s":
            return f"{value:.1f} jobs/s"
        return f"{value:g}"


def _retries(result: RunResult) -> float:
    """Attempts beyond each operation's first: every retry the run needed."""
    totals = result.retry_totals
    return float(max(0, totals.attempts - totals.operations))


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
    if not limit.startswith("+"):
        raise BaselineError(
            f"{where}: write a relative limit as N% (e.g. {metric.name}:10%) or an absolute one as +N "
            f"(e.g. {metric.name}:+{'50ms' if metric.is_duration else '5'})"
        )
    amount = limit[1:]
    if metric.is_duration and re.search(r"[a-z]$", amount, re.IGNORECASE):
        from pytest_quaero.core.settings import parse_duration

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

    @property
    def status(self) -> str:
        return "-" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "title": self.title, "before": self.before, "now": self.now,
            "before_text": self.before_text, "now_text": self.now_text, "change": self.change,
            "limit": self.limit, "passed": self.passed, "status": self.status,
        }


@dataclass
class Comparison:
    """A run compared with its baseline."""

    key: str
    rows: list[MetricRow] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricRow]:
        return [row for row in self.rows if row.passed is False]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def summary(self) -> str:
        gated = [row for row in self.rows if row.passed is not None]
        if not gated:
            return "no --quaero-compare-fail rule; shown for information"
        if self.regressed:
            return "; ".join(f"{row.metric} {row.now_text} vs {row.before_text} ({row.change})"
                             for row in self.regressions)
        return f"{len(gated)} metric{'s' if len(gated) != 1 else ''} within limits"


def _change(before: float, now: float) -> str:
    if before == 0:
        return "±0" if now == 0 else "new"
    return f"{(now - before) / before * 100:+.1f}%"


def compare(before: RunResult, now: RunResult, rules: Sequence[CompareRule]) -> Comparison:
    """Every metric before and now; the ruled ones pass or fail, in the rules' direction."""
    ruled = {rule.metric.name: rule for rule in rules}
    comparison = Comparison(scenario_key(now))
    for metric in METRICS.values():
        old, new = float(metric.value(before)), float(metric.value(now))
        rule = ruled.get(metric.name)
        comparison.rows.append(MetricRow(
            metric.name, metric.title, old, new, metric.format(old), metric.format(new), _change(old, new),
            rule.describe_bound(old) if rule else "", rule.passes(old, new) if rule else None,
        ))
    return comparison


_TABLE_HEADERS = ("metric", "before", "now", "change", "limit", "status")


def format_table(rows: Sequence[MetricRow] | Sequence[Mapping[str, Any]], *, gated_only: bool = False) -> list[str]:
    """Aligned text lines: metric, before, now, change, limit, status."""
    cells: list[tuple[str, ...]] = []
    for row in rows:
        data = row.as_dict() if isinstance(row, MetricRow) else row
        if gated_only and data["passed"] is None:
            continue
        cells.append((data["metric"], data["before_text"], data["now_text"], data["change"], data["limit"] or "-",
                      data["status"]))
    widths = [max(len(line[i]) for line in [_TABLE_HEADERS, *cells]) for i in range(len(_TABLE_HEADERS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in [_TABLE_HEADERS, *cells]]


# ---------------------------------------------------------------- keys


def scenario_key(result: RunResult | Mapping[str, Any]) -> str:
    """``light-5x20``: the scenario's name and shape."""
    if isinstance(result, RunResult):
        return f"{result.scenario}-{result.parents}x{result.children_per_parent}"
    return f"{result['scenario']}-{result['parents']}x{result['children_per_parent']}"


def fingerprint(machine: Mapping[str, Any] | None = None) -> str:
    """A machine's baseline key from :func:`results_json.machine_info`, without anything that jitters."""
    override = os.environ.get("QUAERO_BASELINE_MACHINE", "").strip()
    if override and machine is None:
        return override
    if machine is None:
        from pytest_quaero.core.results_json import machine_info

        machine = machine_info()
    python = ".".join(str(machine.get("python_version", "?")).split(".")[:2])
    return (
        f"{machine.get('system', '?')}-{machine.get('machine', '?')}-{machine.get('python_implementation', '?')}-"
        f"{python}-sqlite{machine.get('sqlite_version', '?')}-{machine.get('cpu_count', '?')}cpu"
    )


# ---------------------------------------------------------------- the store


@contextlib.contextmanager
def _locked(path: Path, timeout: float = 60.0) -> Iterator[None]:
    """Hold ``path`` + ``.lock`` exclusively, across processes (xdist workers, CI jobs)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: a lock file created with O_EXCL
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BaselineError(f"{path}: another process has held {lock_path} for {timeout:g}s") from None
                    time.sleep(0.01)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return
    while True:  # pragma: no cover - Windows
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            os.close(fd)
            break
        except FileExistsError:
            # A lock older than the timeout belongs to a process that died holding it.
            with contextlib.suppress(OSError):
                if time.time() - lock_path.stat().st_mtime > timeout:
                    os.unlink(lock_path)
                    continue
            if time.monotonic() > deadline:
                raise BaselineError(f"{path}: {lock_path} has been held for {timeout:g}s") from None
            time.sleep(0.01)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)


@dataclass(frozen=True)
class StoredBaseline:
    """A result found in a store, and where it came from."""

    result: RunResult
    key: str
    fingerprint: str
    saved: str


class BaselineStore:
    """One JSON results document holding baselines of many scenarios and machines."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        if target.is_dir() or str(path).endswith(("/", os.sep)):
            target = target / "baseline.json"
        self.path = target

    def _entries(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        if not self.path.exists():
            return None, []
        from pytest_quaero.core.results_json import load_document

        try:
            document = load_document(self.path)
        except ValueError as exc:
            raise BaselineError(f"baseline {exc}") from None
        results = document.get("results")
        if not isinstance(results, list):
            raise BaselineError(f"baseline {self.path}: 'results' is not a list")
        return document, results

    @staticmethod
    def _identity(entry: Mapping[str, Any], document: Mapping[str, Any]) -> tuple[str, str, str]:
        info = (entry.get("extra") or {}).get("baseline") or {}
        key = info.get("key") or scenario_key(entry)
        machine = info.get("fingerprint") or fingerprint(document.get("machine") or {})
        return key, machine, str(info.get("saved") or document.get("created") or "")

    def find(self, key: str, machine: str) -> StoredBaseline | None:
        """The baseline of scenario ``key`` on machine ``machine``, or None."""
        document, entries = self._entries()
        if document is None:
            return None
        found: StoredBaseline | None = None
        for entry in entries:
            try:
                entry_key, entry_machine, saved = self._identity(entry, document)
            except KeyError:
                continue
            if entry_key == key and entry_machine == machine:
                try:
                    found = StoredBaseline(RunResult.from_dict(entry), entry_key, entry_machine, saved)
                except (TypeError, ValueError) as exc:
                    raise BaselineError(f"baseline {self.path}: entry {key} cannot be read ({exc})") from None
        return found

    def machines(self, key: str) -> list[str]:
        """Machines that do have a baseline of ``key`` (to explain a miss)."""
        document, entries = self._entries()
        if document is None:
            return []
        seen: list[str] = []
        for entry in entries:
            with contextlib.suppress(KeyError):
                entry_key, entry_machine, _ = self._identity(entry, document)
                if entry_key == key and entry_machine not in seen:
                    seen.append(entry_machine)
        return seen

    def save(self, result: RunResult, machine: str) -> str:
        """Store ``result`` as the baseline of its scenario on ``machine``; returns the key.

        Other scenarios and machines already in the store are kept as they are; an
        unreadable store is never overwritten (that would lose every baseline in it).
        """
        from pytest_quaero.core.results_json import build_document, write_atomic

        key = scenario_key(result)
        # The entry exactly as --quaero-json writes it (machine, commit, versions on the document).
        new_document = build_document([result])
        entry = new_document["results"][0]
        entry["extra"] = dict(entry.get("extra") or {})
        entry["extra"]["baseline"] = {
            "key": key, "fingerprint": machine, "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with _locked(self.path):
            document, entries = self._entries()
            kept: list[dict[str, Any]] = []
            for old in entries:
                try:
                    same = self._identity(old, document or {})[:2] == (key, machine)
                except KeyError:
                    same = False
                if not same:
                    kept.append(old)
            kept.append(entry)
            new_document["results"] = kept
            new_document["baseline_store"] = True
            write_atomic(self.path, new_document)
        return key


def load_results(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[RunResult]]:
    """A results document and its results, with errors that name the file."""
    from pytest_quaero.core.results_json import load_document

    try:
        document = load_document(path)
        return document, [RunResult.from_dict(data) for data in document["results"]]
    except ValueError as exc:
        raise BaselineError(str(exc)) from None
    except (TypeError, KeyError) as exc:
        raise BaselineError(f"{path}: a result cannot be read ({exc})") from None


def document_fingerprint(document: Mapping[str, Any], result: RunResult) -> str:
    info = result.extra.get("baseline") if isinstance(result.extra, dict) else None
    if isinstance(info, dict) and info.get("fingerprint"):
        return str(info["fingerprint"])
    return fingerprint(document.get("machine") or {})
