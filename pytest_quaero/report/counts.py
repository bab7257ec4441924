"""The run's counted database work per job, worded once for every report.

Pure functions over a :class:`RunResult`; the Markdown section
(:func:`pytest_quaero.report.sections.locks.work_per_job_section`), the pytest-html extras
and the terminal summary all format what :func:`count_table` returns, so the three
reports cannot disagree.

Reads ``extra["counts"]`` (:func:`pytest_quaero.core.counts.counts_from_locks`) defensively:
a result recorded by an older pytest-quaero (a JSON file, a baseline) lacks it, and a
reshaped entry must cost the table, never the report. Shape::

    {"jobs": N, "total": {kind: n, ..., "statements": n, "write_transactions": n, "rollbacks": n,
                          "rows_changed": n, "connections": n},
     "per_job": {the same keys, total / jobs},
     "operations": {operation: {the same keys as total}},
     "not_gated": {"retried_statements": n, "poll_statements": n, "harness_statements": n}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_quaero.core.counts import KINDS, server_rows_per_job
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.report.locks import HARNESS, OPERATION_LABELS, OPERATION_ORDER
from pytest_quaero.report.wording import not_measured, plural

__all__ = [
    "COUNTS_MEANING",
    "TOTAL_LABEL",
    "CountRow",
    "CountTable",
    "count_table",
    "per_job",
    "server_counts_text",
]

COUNTS_MEANING = (
    "Unlike the times above, these are exact counts of the successful path on every connection the run opened (a "
    "one-statement autocommit write counts as a write transaction; rows changed include those a trigger changed): a "
    "scenario does the same work in every run on any machine, so `--quaero-baseline` gates the statements, write "
    "transactions, rows changed and rollbacks per job and the connections against the stored baseline, exactly "
    "(on PostgreSQL also the rows inserted, updated and deleted per job that the server itself counted in the run's "
    "schema, whichever client wrote them); "
    "statements of retried attempts, of receives that came back empty (polls) and of the plugin's own harness thread "
    "vary with timing and are listed apart, not gated.")
#: the write-lock table's labels (pytest_quaero.report.locks keeps its own private copy), so a row reads the same in
#: both tables
TOTAL_LABEL = "all operations (successful path)"
_OLD_RESULT = ("this result has no database work counts (it was recorded before pytest-quaero counted them); "
               "re-run the scenario")
#: (key in not_gated, what one of it is called)
_NOT_GATED = (("retried_statements", "retried statement"), ("poll_statements", "empty-poll statement"),
              ("harness_statements", "harness statement"))


def per_job(value: float) -> str:
    """Two decimals; a small non-zero figure keeps two significant digits so it never reads as 0.00."""
    if 0 < abs(value) < 0.005:
        return f"{value:.2g}"
    return f"{value:.2f}"


@dataclass(frozen=True)
class CountRow:
    """One operation's line (or the run's total), as figures per job; :meth:`CountTable.cells` words it."""

    operation: str
    label: str
    statements: float
    #: (kind, per job) in :data:`~pytest_quaero.core.counts.KINDS` order, the kinds the operation ran
    kinds: tuple[tuple[str, float], ...]
    write_transactions: float
    rows_changed: float
    connections: int

    @property
    def kinds_text(self) -> str:
        """``insert 2.00, begin 1.00, commit 1.00``: the kinds the operation ran, per job."""
        return ", ".join(f"{kind} {per_job(n)}" for kind, n in self.kinds)

    @property
    def statements_text(self) -> str:
        """``4.00 (insert 2.00, begin 1.00, commit 1.00)``."""
        kinds = self.kinds_text
        return f"{per_job(self.statements)} ({kinds})" if kinds else per_job(self.statements)


@dataclass
class CountTable:
    """The rows (operations in the write-lock table's order, then the total), or why there are none."""

    rows: list[CountRow] = field(default_factory=list)
    jobs: int = 0
    #: ``not gated: 3 retried statements, ...`` (empty when the result has no such figures)
    not_gated: str = ""
    missing: str | None = None
    #: ``server counted per job: 1.05 rows inserted, ...`` (PostgreSQL; empty where the server counts nothing)
    server: str = ""

    HEADERS = ("Operation", "Statements per Job", "Write Transactions per Job", "Rows Changed per Job",
               "Connections")

    def cells(self, row: CountRow) -> tuple[str, str, str, str, str]:
        return (row.label, row.statements_text, per_job(row.write_transactions), per_job(row.rows_changed),
                str(row.connections))

    @property
    def total(self) -> CountRow | None:
        return self.rows[-1] if self.rows and self.rows[-1].operation == "total" else None


def _row(operation: str, label: str, data: Mapping[str, Any], divide: float, connections: Any) -> CountRow:
    """``data``'s figures divided by ``divide`` (the job count, or 1 for figures already per job)."""

    def share(key: str) -> float:
        return float(data.get(key) or 0) / divide

    kinds = tuple((kind, share(kind)) for kind in KINDS if share(kind))
    return CountRow(operation, label, share("statements"), kinds, share("write_transactions"),
                    share("rows_changed"), int(connections or 0))


def _not_gated(data: Any) -> str:
    if not isinstance(data, Mapping):
        return ""
    parts = [plural(int(data[key]), what) for key, what in _NOT_GATED if key in data]
    return "not gated: " + ", ".join(parts) if parts else ""


def server_counts_text(result: RunResult) -> str:
    """What the database server counted per job (any client, any language), gated like the counts; or ``""``."""
    per_job_rows = server_rows_per_job(result.extra) if isinstance(result.extra, Mapping) else None
    if per_job_rows is None:
        return ""
    figures = ", ".join(f"{per_job(value)} {key.replace('_', ' ')}" for key, value in per_job_rows.items())
    return f"server counted per job (pg_stat_user_tables, every client): {figures}"


def count_table(result: RunResult) -> CountTable:
    """The database work per job of ``result``: each operation, then the run's total."""
    counts = result.extra.get("counts")
    if not isinstance(counts, Mapping):
        return CountTable(missing=not_measured(_OLD_RESULT))
    try:
        operations, total, each = counts["operations"], counts["total"], counts["per_job"]
        if not all(isinstance(part, Mapping) for part in (operations, total, each)):
            raise TypeError("operations, total and per_job must be mappings")
        jobs = int(counts["jobs"])
        if jobs <= 0:
            return CountTable(jobs=jobs, missing=not_measured("the run had no jobs to count the work of"))
        known = [op for op in OPERATION_ORDER if op in operations]
        # the harness is not gated and so normally absent here; if a result carries it, it goes last, as in the
        # write-lock table
        order: list[str] = known + sorted(op for op in operations if op not in OPERATION_ORDER and op != HARNESS) \
            + ([HARNESS] if HARNESS in operations else [])
        rows = [_row(op, OPERATION_LABELS.get(op, op), operations[op], jobs, operations[op].get("connections"))
                for op in order]
        # the total row is the core's own per-job figures, not a sum of rounded shares
        rows.append(_row("total", TOTAL_LABEL, each, 1, total.get("connections")))
        not_gated = _not_gated(counts.get("not_gated"))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return CountTable(missing=not_measured(f"the database work counts have an unexpected shape ({exc!r})"))
    return CountTable(rows, jobs, not_gated, server=server_counts_text(result))

