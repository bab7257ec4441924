"""The write-lock table and the detection checks of one run, worded once for every report.

Pure functions over a :class:`RunResult`; the Markdown section
(:mod:`pytest_quaero.report.sections.locks`), the pytest-html extras and the terminal
summary all format what these return, so the three reports cannot disagree.

Keys read, all optional and read defensively (a result recorded by an older
pytest-quaero lacks them, and a reshaped entry must not break a report):

* ``extra["locks"]``: :meth:`pytest_quaero.core.instruments.Instruments.summary`, hold
  and wait spreads per operation;
* ``extra["acks"]``, ``extra["stalls"]``, ``extra["sends"]``, ``extra["silent_writes"]``:
  the per-message checks, each with a few ``examples`` (acks may also carry
  ``deleted_outside_ack``: messages removed outside any ack);
* ``integrity["lost_jobs"]``, ``["lost_examples"]``, ``["unfinished_children"]``,
  ``["unfinished_examples"]``;
* ``extra["connections"]["configurations"]``: each distinct connection configuration seen
  (busy_timeout, journal_mode, synchronous, read back from the connection; a PostgreSQL run
  files lock_timeout, the isolation level and synchronous_commit under those keys), with how many
  connections ran with it and who opened them (``plugin``, ``setup``, ``user``, or the top
  package of the code that called ``sqlite3.connect``: ``sqlalchemy``, ``django``, ``conftest``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.report.wording import POSTGRESQL, backend_of, not_measured, plural, words_of

__all__ = [
    "CONFIGURATIONS_MEANING",
    "HARNESS",
    "HOLD_WAIT_MEANING",
    "OPERATION_LABELS",
    "OPERATION_ORDER",
    "STALLS",
    "Check",
    "ConfigurationRow",
    "LockRow",
    "LockTable",
    "connection_configurations",
    "detection_checks",
    "detection_summary",
    "lock_table",
]

HARNESS = "harness"
#: the name of the stalled-receive check (a delay, where every other check finds a wrong result)
STALLS = "Stalled receives"
#: the queue's life cycle first (receive, ack), then the job store, then the rest
OPERATION_ORDER = ("queue_receive", "queue_delete", "save_job", "progress_update", "create_child", "connect",
                   "handler")
OPERATION_LABELS = {
    "save_job": "save_job (mark_running)",
    "progress_update": "progress_update (finish_child)",
    HARNESS: "harness (the plugin's own thread: seeding checks, monitor, validation)",
}
#: the SQLite wording of both (the template's backend); :func:`pytest_quaero.report.wording.words_of` has each
#: backend's
HOLD_WAIT_MEANING = words_of({}).hold_wait
#: why a figure is absent: results recorded before pytest-quaero measured it (a JSON file, a baseline) lack it
_OLD_RESULT = "this result has no {what} (it was recorded before pytest-quaero measured it); re-run the scenario"
#: examples shown per finding: enough to start looking, short enough for one line
MAX_EXAMPLES = 3


# ---------------------------------------------------------------- write lock


@dataclass(frozen=True)
class LockRow:
    """One operation's line of the write-lock table, its cells already worded."""

    operation: str
    label: str
    write_transactions: int
    hold: str
    wait: str
    statements: str
    busy: str


_LOCK_HEADERS = ("Operation", "Write Transactions", "Hold p50/p95/max ms", "Writer Wait p50/p95/max ms",
                 "Statements")


@dataclass
class LockTable:
    """The rows (operations, the harness last, then the total), or why there are none."""

    rows: list[LockRow] = field(default_factory=list)
    connections: int | None = None
    missing: str | None = None
    # a field, so a PostgreSQL run's table names its lock errors as the server does; the class
    # attribute (the default) keeps the template's SQLite wording
    HEADERS: tuple[str, ...] = (*_LOCK_HEADERS, words_of({}).seen)

    def cells(self, row: LockRow) -> tuple[str, str, str, str, str, str]:
        return (row.label, str(row.write_transactions), row.hold, row.wait, row.statements, row.busy)


def _spread(data: Any) -> str:
    """``p50 / p95 / max`` in ms, or ``-`` when nothing was timed."""
    if not isinstance(data, Mapping) or not int(data.get("samples", 0)):
        return "-"
    return f"{float(data['p50']):.2f} / {float(data['p95']):.2f} / {float(data['max']):.2f}"


def _counts(counter: Any) -> str:
    items = [(str(k), int(v)) for k, v in (counter or {}).items() if int(v)]
    return ", ".join(f"{k} {v}" for k, v in items)


def _row(operation: str, label: str, data: Mapping[str, Any]) -> LockRow:
    statements = data.get("statements") or {}
    total = sum(int(n) for n in statements.values())
    kinds = _counts(statements)
    busy = int(data.get("busy_errors", 0))
    codes = _counts(data.get("busy_codes"))
    return LockRow(operation, label, int(data.get("write_transactions", 0)), _spread(data.get("hold_ms")),
                   _spread(data.get("wait_ms")), f"{total} ({kinds})" if kinds else str(total),
                   f"{busy} ({codes})" if busy and codes else str(busy))


def lock_table(result: RunResult) -> LockTable:
    """The write-lock table of ``result``: each operation, the harness last, then every connection in total."""
    locks = result.extra.get("locks")
    if not isinstance(locks, Mapping) or not isinstance(locks.get("operations"), Mapping):
        return LockTable(missing=not_measured(_OLD_RESULT.format(what="write-lock measurements")))
    operations: Mapping[str, Any] = locks["operations"]
    known = [op for op in OPERATION_ORDER if op in operations]
    others = sorted(op for op in operations if op not in OPERATION_ORDER and op != HARNESS)
    order = known + others + ([HARNESS] if HARNESS in operations else [])
    try:
        rows = [_row(op, OPERATION_LABELS.get(op, op), operations[op]) for op in order]
        if isinstance(locks.get("total"), Mapping):
            rows.append(_row("total", "all operations" + (" (harness included)" if HARNESS in operations else ""),
                             locks["total"]))
        connections = int(locks.get("connections", 0))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return LockTable(missing=not_measured(f"the lock measurements have an unexpected shape ({exc!r})"))
    return LockTable(rows, connections, HEADERS=(*_LOCK_HEADERS, words_of(result).seen))


# ---------------------------------------------------------------- connection configurations

CONFIGURATIONS_MEANING = words_of({}).configurations


@dataclass(frozen=True)
class ConfigurationRow:
    """One connection configuration: its pragmas, how many connections had it, and who opened them."""

    busy_timeout_ms: int
    journal_mode: str
    synchronous: str
    connections: int
    opened_by: str

    HEADERS = ("busy_timeout", "journal_mode", "synchronous", "connections", "opened by")

    def cells(self) -> tuple[str, ...]:
        return (f"{self.busy_timeout_ms}ms", self.journal_mode, self.synchronous, str(self.connections),
                self.opened_by)

    def text(self, backend: str) -> str:
        """``busy_timeout 10000ms, journal_mode wal, synchronous 1``; on PostgreSQL the server's settings
        (the core records lock_timeout as busy_timeout_ms, the isolation level as ``postgresql read committed``)."""
        if backend == POSTGRESQL:
            isolation = self.journal_mode.removeprefix("postgresql ").upper()
            return f"lock_timeout {self.busy_timeout_ms}ms, isolation {isolation}, {self.synchronous}"
        return (f"busy_timeout {self.busy_timeout_ms}ms, journal_mode {self.journal_mode}, synchronous "
                f"{self.synchronous}")


def connection_configurations(result: RunResult) -> list[ConfigurationRow]:
    """Each distinct configuration of ``result``'s connections, most used first (empty if not recorded)."""
    connections = result.extra.get("connections")
    found = connections.get("configurations") if isinstance(connections, Mapping) else None
    if not isinstance(found, list):
        return []
    rows: list[ConfigurationRow] = []
    for entry in found:
        try:
            origins = entry.get("origins") or {}
            opened_by = ", ".join(f"{origin} {count}" for origin, count in
                                  sorted(origins.items(), key=lambda item: (-int(item[1]), str(item[0]))))
            rows.append(ConfigurationRow(int(entry["busy_timeout_ms"]), str(entry["journal_mode"]),
                                         str(entry["synchronous"]), int(entry.get("connections", 0)), opened_by))
        except (AttributeError, KeyError, TypeError, ValueError):
            continue  # a reshaped entry is left out, never breaks the report
    return sorted(rows, key=lambda row: (-row.connections, row.busy_timeout_ms))


# ---------------------------------------------------------------- detection checks


@dataclass(frozen=True)
class Check:
    """One detection check of a run: its name, what it found, and the words for the reports.

    ``found`` counts the problems (0: none; None: not measured); ``brief`` is the terminal's
    wording of the problems (empty when there are none).
    """

    name: str
    text: str
    found: int | None
    brief: str = ""
    examples: tuple[str, ...] = ()


def _examples(entry: Mapping[str, Any], key: str = "examples") -> tuple[str, ...]:
    found = entry.get(key) or []
    return tuple(str(e) for e in found[:MAX_EXAMPLES]) if isinstance(found, list) else ()


def _eg(examples: tuple[str, ...]) -> str:
    return f" (e.g. {'; '.join(examples)})" if examples else ""


def _entry(result: RunResult, key: str) -> Mapping[str, Any] | None:
    entry = result.extra.get(key)
    return entry if isinstance(entry, Mapping) else None


def _int(entry: Mapping[str, Any], key: str) -> int:
    try:
        return int(entry.get(key) or 0)
    except (TypeError, ValueError):
        return 0


def _acks(result: RunResult) -> Check:
    name = "Acks"
    acks = _entry(result, "acks")
    if acks is None:
        return Check(name, not_measured(_OLD_RESULT.format(what="per-id ack check")), None)
    checked, unchecked = _int(acks, "checked"), _int(acks, "unchecked")
    wrong, nothing = _int(acks, "wrong_id"), _int(acks, "removed_nothing")
    outside, stale = _int(acks, "deleted_outside_ack"), _int(acks, "stale")
    base = (f"{checked} checked (each must remove exactly the message it was given)"
            + (f", {unchecked} could not be checked" if unchecked else ""))
    problems = [text for count, text in (
        (wrong, f"{plural(wrong, 'ack')} removed another message"),
        (nothing, f"{plural(nothing, 'ack')} removed nothing"),
        (outside, f"{plural(outside, 'message')} deleted outside any ack"),
    ) if count]
    # an ack that finds its message gone is what a redelivered copy's second ack does: worth
    # saying, not a wrong ack in itself (a second processing shows in Jobs Processed Twice)
    gone = (f"{plural(stale, 'ack')} found {'its' if stale == 1 else 'their'} message already gone (removed "
            "first by another ack or delete)") if stale else ""
    examples = _examples(acks)
    if not problems:
        return Check(name, f"{base}: none wrong" + (f"; {gone}{_eg(examples)}" if gone else ""), 0)
    found = "; ".join(problems)
    return Check(name, f"{base}: {found}" + (f"; {gone}" if gone else "") + _eg(examples),
                 wrong + nothing + outside, found + _eg(examples[:1]), examples)


def _stalls(result: RunResult) -> Check:
    name = STALLS
    stalls = _entry(result, "stalls")
    if stalls is None:
        return Check(name, not_measured(_OLD_RESULT.format(what="stalled-receive check")), None)
    total = _int(stalls, "total")
    if not total:
        return Check(name, "none (no receive returned nothing while a visible message stayed visible)", 0)
    held = ("after waiting for a row another claim held (FOR UPDATE without SKIP LOCKED)"
            if backend_of(result) == POSTGRESQL else "while another connection held the write lock")
    parts = [f"{n} {what}" for n, what in ((_int(stalls, "lock_held"), held),
                                          (_int(stalls, "lock_error_seen"), "after a lock error"),
                                          (_int(stalls, "lock_free"), "with the lock free")) if n]
    examples = _examples(stalls)
    found = f"{plural(total, 'receive')} returned nothing while a visible message stayed visible"
    return Check(name, found + (f" ({', '.join(parts)})" if parts else "") + _eg(examples), total,
                 f"{plural(total, 'stalled receive')}" + _eg(examples[:1]), examples)


def _sends(result: RunResult) -> Check:
    name = "Sends before their job row"
    sends = _entry(result, "sends")
    if sends is None:
        return Check(name, not_measured(_OLD_RESULT.format(what="send-before-row check")), None)
    checked, early = _int(sends, "checked"), _int(sends, "before_row")
    if not early:
        return Check(name, f"none ({checked} sends checked)", 0)
    examples = _examples(sends)
    found = f"{plural(early, 'message')} sent before {'its' if early == 1 else 'their'} job row existed"
    return Check(name, f"{found} ({checked} sends checked){_eg(examples)}", early, found + _eg(examples[:1]),
                 examples)


def _silent(result: RunResult) -> Check:
    name = "Silent writes"
    silent = _entry(result, "silent_writes")
    if silent is None:
        return Check(name, not_measured(_OLD_RESULT.format(what="silent-write check")), None)
    total = _int(silent, "total")
    if not total:
        return Check(name, "none (every status update and completion changed its row)", 0)
    examples = _examples(silent)
    found = f"{plural(total, 'status update')} changed no row"
    return Check(name, found + _eg(examples), total, found + _eg(examples[:1]), examples)


def _integrity_count(result: RunResult, name: str, key: str, what: str, none: str,
                     found: Callable[[int], tuple[str, str]]) -> Check:
    """A count the integrity check keeps (``key``) with its examples (``<key minus s>_examples``)."""
    if key not in result.integrity:
        return Check(name, not_measured(_OLD_RESULT.format(what=what)), None)
    count = _int(result.integrity, key)
    if not count:
        return Check(name, none, 0)
    examples = _examples(result.integrity, key.replace("_children", "_examples").replace("_jobs", "_examples"))
    long, short = found(count)
    return Check(name, long + _eg(examples), count, short + _eg(examples[:1]), examples)


def _lost(result: RunResult) -> Check:
    return _integrity_count(
        result, "Lost jobs", "lost_jobs", "lost-job count", "none (every acked job was completed or failed)",
        lambda n: (f"{plural(n, 'job')} lost (acked, but neither completed nor failed)", f"{plural(n, 'job')} lost"))


def _unfinished(result: RunResult) -> Check:
    def found(n: int) -> tuple[str, str]:
        text = f"{plural(n, 'child job', 'child jobs')} unfinished"
        return text, text

    return _integrity_count(result, "Unfinished children", "unfinished_children", "unfinished-children count",
                            "none", found)


def detection_checks(result: RunResult) -> list[Check]:
    """Every detection check of ``result``, in a fixed order."""
    return [check(result) for check in (_acks, _stalls, _sends, _silent, _lost, _unfinished)]


def detection_summary(result: RunResult) -> str:
    """The problems the checks found, on one line; empty when every measured check found none."""
    return "; ".join(c.brief for c in detection_checks(result) if c.found)
