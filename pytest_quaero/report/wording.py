"""How the reports word numbers and the database: durations, percentages, status marks, "not measured",
and the names each backend gives its locks (:class:`DbWords`).

Small pure functions shared by the figures (:mod:`pytest_quaero.report.figures`), the
section renderers (:mod:`pytest_quaero.report.sections`) and the terminal, so every
section writes a duration, a percentage, a missing measurement or a lock error the same
way. The template speaks SQLite; on SQLite its wording stays as it is, on PostgreSQL the
same places say the server's things (lock_timeout, SQLSTATEs, row locks).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_quaero.core.metrics import RunResult, WorkerRecord

__all__ = [
    "BACKENDS",
    "FAIL_ICON",
    "NONE_ICON",
    "PASS_ICON",
    "PG_LOCK_CODES",
    "POSTGRESQL",
    "SQLITE",
    "DbWords",
    "backend_of",
    "cell",
    "describe_failure",
    "describe_pool",
    "duration",
    "first_of_each",
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
    "words_for",
    "words_of",
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


# ---------------------------------------------------------------- the database's words

SQLITE, POSTGRESQL = "sqlite", "postgresql"
#: the report's order when a session ran both (through markers)
BACKENDS = (SQLITE, POSTGRESQL)
#: the SQLSTATEs counted as lock errors on PostgreSQL (pytest_quaero.core.postgresql.errors.LOCK_SQLSTATES)
PG_LOCK_CODES = "SQLSTATE 40001/40P01/55P03/57014/53300"


@dataclass(frozen=True)
class DbWords:
    """What the reports call the database's things on one backend, or on a session that ran both."""

    backends: tuple[str, ...]
    #: ``SQLite``, ``PostgreSQL``, ``SQLite and PostgreSQL``
    name: str
    #: the short count in terminal lines: ``0 busy errors``
    errors: str
    #: the lock errors' codes: ``SQLITE_BUSY/LOCKED``
    codes: str
    #: ``(0 busy events)`` where no retry happened
    events: str
    #: the heading under Database Lock Resilience
    analysis: str
    #: the readiness criterion: ``Zero ... across all test scenarios``
    zero: str
    #: the monitoring suggestion and the critical alert
    track: str
    alert: str
    #: the setting a lock error waits out: ``busy_timeout``
    timeout: str
    #: the write-lock table's last column
    seen: str
    #: the terminal's write-lock line starts ``  write lock:``
    lock: str
    #: what the write-lock table's hold and wait mean, and what the connection configurations are
    hold_wait: str
    configurations: str
    #: a lock error that came back well before the timeout
    fast: str
    #: where the run created its tables (Apply database schema updates)
    schema: str
    #: Network Failure Simulation: why this session did not cover it
    network: str

    @property
    def postgresql(self) -> bool:
        return POSTGRESQL in self.backends

    @property
    def sqlite(self) -> bool:
        return SQLITE in self.backends

    def begin(self, begin_immediate: bool) -> str:
        """How write transactions begin (Simulated Work per Job's last words)."""
        sqlite = f"BEGIN IMMEDIATE {'on' if begin_immediate else 'off'}"
        postgresql = "row locks taken by the statements themselves (BEGIN IMMEDIATE has no PostgreSQL counterpart)"
        if self.backends == (POSTGRESQL,):
            return postgresql
        return f"{sqlite} (SQLite; on PostgreSQL {postgresql})" if self.postgresql else sqlite


_SQLITE_HOLD_WAIT = (
    "Hold is how long a write transaction kept SQLite's write lock, from BEGIN IMMEDIATE returning (or the first "
    "write of a deferred transaction) to its COMMIT or ROLLBACK; wait is how long the writer took to get the lock.")
_PG_HOLD_WAIT = (
    "Hold is how long a transaction kept row locks other transactions may want, from its first statement that locks "
    "an existing row (an UPDATE, a DELETE, a locking read FOR UPDATE/FOR SHARE) to its COMMIT or ROLLBACK; no other "
    "transaction waits for an INSERT's new row, so a transaction that only inserts holds nothing (hold 0). Wait is "
    "how long that first locking statement took: it waits while another transaction holds one of those rows.")
_BOTH_HOLD_WAIT = (
    "Both are timed on every connection the run opened (workers, producers, monitor, the hooks' connection() and "
    "pytest_quaero.connect), by operation; a one-statement autocommit write (goqite's receive) cannot be split from "
    "outside, so its whole time counts as wait and it has no hold.")
_SQLITE_CONFIGURATIONS = (
    "Each distinct configuration the run's connections had, read back from SQLite on the connection itself "
    "(a library's own connections too, at their first statement): the busy_timeout a lock error is judged "
    "against (a \"fast\" busy error came back in under a tenth of it) is the one of the connection that raised "
    "it, not the run's setting.")
_PG_CONFIGURATIONS = (
    "Each distinct configuration the run's connections had, read back from the PostgreSQL server on the connection "
    "itself (current_setting: lock_timeout, the transaction isolation level, synchronous_commit): the lock_timeout a "
    "lock error is judged against (a \"fast\" lock error came back in under a tenth of it) is the one of the "
    "connection that raised it, not the run's setting.")
_PG_NETWORK = ("not covered: no connection to the PostgreSQL server was cut in this session; no --quaero-faults "
               "fault cuts one")

_SQLITE_WORDS = DbWords(
    backends=(SQLITE,), name="SQLite", errors="busy errors", codes="SQLITE_BUSY/LOCKED", events="busy events",
    analysis="SQLITE_BUSY Error Analysis", zero="Zero SQLITE_BUSY errors across all test scenarios",
    track="Track SQLITE_BUSY error rate", alert="SQLITE_BUSY error rate > 0 per hour", timeout="busy_timeout",
    seen="Busy Errors Seen", lock="write lock", hold_wait=f"{_SQLITE_HOLD_WAIT} {_BOTH_HOLD_WAIT}",
    configurations=_SQLITE_CONFIGURATIONS, fast="(a lock-upgrade or snapshot bug, not contention)",
    schema="this run created the goqite and crawl_jobs schemas on a fresh file",
    network="not covered: the queue is a local SQLite file")
_POSTGRESQL_WORDS = DbWords(
    backends=(POSTGRESQL,), name="PostgreSQL", errors="lock errors", codes=PG_LOCK_CODES, events="lock errors",
    analysis="Lock Error Analysis", zero=f"Zero lock errors ({PG_LOCK_CODES}) across all test scenarios",
    track=f"Track the {PG_LOCK_CODES} lock error rate", alert="Lock error rate > 0 per hour",
    timeout="lock_timeout", seen="Lock Errors Seen", lock="row locks", hold_wait=f"{_PG_HOLD_WAIT} {_BOTH_HOLD_WAIT}",
    configurations=_PG_CONFIGURATIONS,
    fast="(a serialization failure or deadlock comes at once: a race between transactions, not a long wait)",
    schema="this run created the goqite and crawl_jobs tables in a fresh schema of its own on the server, dropped "
           "afterwards",
    network=_PG_NETWORK)
_MIXED_WORDS = DbWords(
    backends=BACKENDS, name="SQLite and PostgreSQL", errors="lock errors",
    codes=f"SQLITE_BUSY/LOCKED on SQLite, {PG_LOCK_CODES} on PostgreSQL", events="lock errors",
    analysis="Lock Error Analysis (SQLITE_BUSY on SQLite, SQLSTATE on PostgreSQL)",
    zero=f"Zero lock errors (SQLITE_BUSY; {PG_LOCK_CODES}) across all test scenarios",
    track=f"Track the SQLITE_BUSY and {PG_LOCK_CODES} lock error rate", alert="Lock error rate > 0 per hour",
    timeout="busy_timeout (SQLite) or lock_timeout (PostgreSQL)", seen="Lock Errors Seen", lock="locks",
    hold_wait=f"On SQLite: {_SQLITE_HOLD_WAIT} On PostgreSQL: {_PG_HOLD_WAIT} {_BOTH_HOLD_WAIT}",
    configurations=f"On SQLite: {_SQLITE_CONFIGURATIONS} On PostgreSQL: {_PG_CONFIGURATIONS}",
    fast="(on SQLite a lock-upgrade or snapshot bug, on PostgreSQL a race or a deadlock: not contention)",
    schema="this session's runs created the goqite and crawl_jobs schemas on fresh SQLite files and in fresh "
           "PostgreSQL schemas",
    network=f"not covered: the SQLite runs' queue is a local file; {_PG_NETWORK.removeprefix('not covered: ')}")
_WORDS = {(SQLITE,): _SQLITE_WORDS, (POSTGRESQL,): _POSTGRESQL_WORDS, BACKENDS: _MIXED_WORDS}


def backend_of(source: RunResult | Mapping[str, Any] | Any) -> str:
    """``sqlite`` or ``postgresql``: the backend a result ran on (its recorded settings), or of a :class:`Settings`."""
    settings = source.settings if isinstance(source, RunResult) else source
    backend = settings.get("backend") if isinstance(settings, Mapping) else getattr(settings, "backend", None)
    return POSTGRESQL if backend == POSTGRESQL else SQLITE


def words_for(results: Iterable[RunResult], settings: Any = None) -> DbWords:
    """The words of the backends ``results`` ran on; with no result, those of ``settings`` (a session's)."""
    found = {backend_of(r) for r in results} or {backend_of(settings)}
    return _WORDS[tuple(b for b in BACKENDS if b in found)]


def words_of(source: RunResult | Mapping[str, Any] | Any) -> DbWords:
    """The words of one result's (or one settings') backend."""
    return _WORDS[(backend_of(source),)]


def first_of_each(results: Iterable[RunResult]) -> dict[str, RunResult]:
    """The first result of each backend, in :data:`BACKENDS` order: whose read-back settings the report shows."""
    firsts: dict[str, RunResult] = {}
    for result in results:
        firsts.setdefault(backend_of(result), result)
    return {b: firsts[b] for b in BACKENDS if b in firsts}
