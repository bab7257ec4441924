"""How the Markdown report words numbers: durations, percentages, status marks, "not measured".

Small pure functions shared by the figures (:mod:`pytest_quaero.report.figures`) and
the section renderers (:mod:`pytest_quaero.report.sections`), so every section writes a
duration, a percentage or a missing measurement the same way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pytest_quaero.core.metrics import WorkerRecord

__all__ = [
    "FAIL_ICON",
    "NONE_ICON",
    "PASS_ICON",
    "cell",
    "describe_failure",
    "describe_pool",
    "duration",
    "hard_breaks",
    "mark",
    "names",
    "not_measured",
    "not_run",
    "offset",
    "pct",
    "plural",
    "pool_runtime",
    "status",
    "title",
    "utc",
    "worker_name",
]

# the template's status marks: passed, failed, and "nothing to judge"
PASS_ICON = "\N{WHITE HEAVY CHECK MARK}"
FAIL_ICON = "\N{CROSS MARK}"
NONE_ICON = "\N{HEAVY MINUS SIGN}"


def not_measured(why: str) -> str:
    """What stands where the template has a placeholder this session did not measure."""
    return f"not measured: {why}"


def not_run(name: str) -> str:
    """A template scenario that did not run, with the option that runs it."""
    return not_measured(
        f"{name} was not run in this session (run with --quaero-scenario={name} or --quaero-scenario=all)")


def duration(seconds: float) -> str:
    """Milliseconds under a second, seconds under two minutes, then minutes and seconds."""
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 120:
        return f"{seconds:.2f}s"
    return f"{int(seconds // 60)}m {seconds % 60:04.1f}s"


def offset(seconds: float) -> str:
    """``t+MM:SS.mmm``: the template's timeline stamps, with milliseconds for short runs."""
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"t+{int(minutes):02d}:{rest:06.3f}"


def pct(value: float) -> str:
    return f"{value:.1f}%"


def cell(text: Any) -> str:
    """``text`` made safe for one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def status(passed: bool) -> str:
    return f"{PASS_ICON} PASS" if passed else f"{FAIL_ICON} FAIL"


def mark(ok: bool | None) -> str:
    """The status mark alone; None (nothing to judge) gets the neutral one."""
    return NONE_ICON if ok is None else (PASS_ICON if ok else FAIL_ICON)


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``1 criterion``, ``2 criteria``; ``many`` defaults to ``singular + "s"``."""
    return f"{count} {singular if count == 1 else (many or singular + 's')}"


def names(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def utc(wall: float, millis: bool = False) -> str:
    """An ISO 8601 UTC stamp of a wall-clock time, optionally with milliseconds."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
    return f"{stamp}.{int(wall % 1 * 1000):03d}Z" if millis else stamp + "Z"


def title(name: str, jobs: int, *, lower: bool = False) -> str:
    """A scenario's heading: ``Light Load Test (100 Jobs)``, or ``(100 jobs)`` in the timeline."""
    return f"{name.capitalize()} Load Test ({jobs} {'jobs' if lower else 'Jobs'})"


def describe_failure(verdict: dict[str, Any], label: str) -> str:
    """Short: the summary names the numbers; the critical-issues list adds each verdict's detail."""
    return f"{label} {verdict['title']} (measured {verdict['measured']}, required {verdict['required']})"


def hard_breaks(lines: list[str]) -> list[str]:
    """Consecutive ``**Key:** value`` lines with CommonMark hard breaks, so they render as lines, not one paragraph."""
    return [line + "\\" for line in lines[:-1]] + lines[-1:]


def pool_runtime(hello: dict[str, Any]) -> str:
    """``go1.26.8``, ``rust 1.80``: the runtime an external pool's hello names (the language once)."""
    language, runtime = str(hello.get("language") or ""), str(hello.get("runtime") or "")
    if runtime.lower().startswith(language.lower()):
        return runtime or "unknown runtime"
    return f"{language} {runtime}".strip()


def describe_pool(extra: dict[str, Any]) -> str | None:
    """Which worker pool ran, from ``extra["pool"]`` (an external or mixed pool); None for the built-in one."""
    pool = extra.get("pool")
    if not isinstance(pool, dict):
        return None
    hello = pool.get("hello")
    runtime = pool_runtime(hello if isinstance(hello, dict) else {})
    workers = pool.get("workers")
    workers = workers if isinstance(workers, dict) else {}
    counts = ", ".join(f"{n} {kind}" for kind, n in workers.items() if n)
    kind = str(pool.get("kind") or "external")
    return (f"{kind} worker pool ({runtime}" + (f"; {counts} workers" if counts else "") + ")"
            + (f": {pool['command']}" if pool.get("command") else ""))


def worker_name(worker: WorkerRecord) -> str:
    return f"Worker {worker.index + 1}"
