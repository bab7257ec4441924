"""pytest-html integration: extra columns, criteria, write-lock, work and detection tables, charts, the environment.

Registered by :func:`pytest_quaero.report.outputs.configure` only when pytest-html is active
(its hooks would otherwise be unknown to pytest), and only in the process that writes
the HTML (the xdist controller, or the only process). Everything it shows comes from
the test reports: the criterion items' ``user_properties`` (scenario, measured,
required) and the results carried on reports (``report.quaero_results``), so an xdist
run renders exactly what a single-process run does.

Charts (queue length over time, per-worker utilization, processing-time distribution)
are drawn with matplotlib, the optional ``charts`` extra, as base64 PNG extras; that
works with ``--self-contained-html`` (inlined) and without it (pytest-html writes them
under ``assets/``). Without matplotlib the report says how to get them.
"""

from __future__ import annotations

import base64
import io
import platform
import re
import sqlite3
from html import escape
from typing import Any

import pytest

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.results_json import plugin_version
from pytest_quaero.report.counts import COUNTS_MEANING, count_table
from pytest_quaero.report.locks import HOLD_WAIT_MEANING, detection_checks, lock_table
from pytest_quaero.session import QuaeroSession

__all__ = ["CHARTS_HINT", "COLUMNS", "HtmlIntegration", "counts_table_html", "criteria_table_html", "detection_html",
           "lock_table_html", "render_charts"]

#: (user property, column key, header); the key becomes pytest-html's sortable ``col-<key>``
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("quaero_scenario", "quaero_scenario", "Scenario"),
    ("quaero_measured", "quaero_measured", "Measured"),
    ("quaero_required", "quaero_required", "Required"),
)
#: the result table's default columns are Result | Test | Duration | Links; ours go after Test
_INSERT_AT = 2
CHARTS_HINT = "Charts need matplotlib: pip install 'pytest-quaero[charts]'"


def _properties(report: Any) -> dict[str, Any]:
    # xdist turns the (name, value) tuples into lists on the way; both unpack the same
    return {name: value for name, value in (getattr(report, "user_properties", None) or [])}


def criteria_table_html(result: RunResult, label: str) -> str:
    status = "PASS" if result.passed else "FAIL"
    rows = "".join(
        f"<tr><td>{escape(v['title'])}</td><td>{escape(str(v['measured']))}</td>"
        f"<td>{escape(str(v['required']))}</td><td class=\"{'passed' if v['passed'] else 'failed'}\">"
        f"{'PASS' if v['passed'] else 'FAIL'}</td></tr>"
        for v in result.verdicts
    )
    return (
        f"<div class=\"quaero-scenario\"><h3>quaero[{escape(label)}] {result.parents} x {result.children_per_parent} = "
        f"{result.total_jobs} jobs: <span class=\"{'passed' if result.passed else 'failed'}\">{status}</span></h3>"
        f"<p>{result.jobs_completed}/{result.total_jobs} jobs in {result.execution_time:.2f}s, "
        f"{result.throughput:.1f} jobs/s, p95 processing {result.p95 * 1000:.1f}ms, {result.busy_errors} busy errors, "
        f"peak queue {result.peak_queue_length}; run {escape(result.run_id)}</p>"
        "<table class=\"quaero-criteria\"><thead><tr><th>Criterion</th><th>Measured</th><th>Required</th>"
        f"<th>Status</th></tr></thead><tbody>{rows}</tbody></table></div>"
    )


#: pytest-html's stylesheet draws no cell borders; inline styles survive --self-contained-html and assets alike
_TABLE_STYLE = "border-collapse: collapse; margin: 0.5em 0"
_CELL_STYLE = "border: 1px solid #999; padding: 2px 6px; text-align: left"


def _bordered(css: str, headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    def row(cells: tuple[str, ...], tag: str) -> str:
        return "<tr>" + "".join(f"<{tag} style=\"{_CELL_STYLE}\">{escape(c)}</{tag}>" for c in cells) + "</tr>"

    body = "".join(row(cells, "td") for cells in rows)
    return (f"<table class=\"{css}\" style=\"{_TABLE_STYLE}\"><thead>{row(headers, 'th')}</thead>"
            f"<tbody>{body}</tbody></table>")


def lock_table_html(result: RunResult, label: str) -> str:
    """The run's write-lock table (hold and writer wait per operation), bordered, or why it was not measured."""
    table = lock_table(result)
    heading = f"<h4>quaero[{escape(label)}] write lock</h4>"
    if table.missing:
        return f"<div class=\"quaero-locks\">{heading}<p>{escape(table.missing)}</p></div>"
    rows = _bordered("quaero-locks-table", table.HEADERS, [table.cells(r) for r in table.rows])
    return (f"<div class=\"quaero-locks\">{heading}<p>{escape(HOLD_WAIT_MEANING)} {table.connections} connections "
            f"observed.</p>{rows}</div>")


def counts_table_html(result: RunResult, label: str) -> str:
    """The run's database work per job (statements, write transactions, rows, connections), bordered, or why not."""
    table = count_table(result)
    heading = f"<h4>quaero[{escape(label)}] database work per job</h4>"
    if table.missing:
        return f"<div class=\"quaero-counts\">{heading}<p>{escape(table.missing)}</p></div>"
    # the sentence is written for Markdown: its `option` spans become code here too
    meaning = re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(COUNTS_MEANING))
    not_gated = f"<p>{escape(table.not_gated)}</p>" if table.not_gated else ""
    rows = _bordered("quaero-counts-table", table.HEADERS, [table.cells(r) for r in table.rows])
    return f"<div class=\"quaero-counts\">{heading}<p>{meaning}</p>{rows}{not_gated}</div>"


def detection_html(result: RunResult, label: str) -> str:
    """What the run's detection checks found, one item per check ("none" where they found nothing)."""
    items = "".join(
        f"<li class=\"{'' if c.found is None else ('failed' if c.found else 'passed')}\"><b>{escape(c.name)}:</b> "
        f"{escape(c.text)}</li>" for c in detection_checks(result))
    return f"<div class=\"quaero-detection\"><h4>quaero[{escape(label)}] detection checks</h4><ul>{items}</ul></div>"


def render_charts(result: RunResult) -> list[tuple[str, str]]:
    """``[(name, base64 PNG)]``: queue length over time, utilization per worker, processing times.

    Raises ImportError when matplotlib (the ``charts`` extra) is not installed. Uses
    matplotlib's object API with the Agg canvas, never pyplot, so no global backend
    or figure state is touched inside someone else's test session.
    """
    # deferred: matplotlib is the optional ``charts`` extra; its absence is this function's ImportError
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def png(figure: Any) -> str:
        FigureCanvasAgg(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    charts: list[tuple[str, str]] = []
    name = result.scenario

    figure = Figure(figsize=(7, 3.2), layout="tight")
    axes = figure.add_subplot()
    samples = result.queue_samples
    if samples:
        offsets = [s[0] for s in samples]
        # markers show where the samples are: a short run has only a handful
        axes.step(offsets, [s[1] for s in samples], where="post", marker="o", markersize=3, label="total")
        axes.step(offsets, [s[2] for s in samples], where="post", marker=".", label="visible")
        axes.step(offsets, [s[3] for s in samples], where="post", marker=".", label="in flight")
        axes.legend(loc="upper right", fontsize="small")
    else:
        axes.text(0.5, 0.5, "no queue sample recorded", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(f"quaero[{name}]: queue length over time")
    axes.set_xlabel("seconds since run start")
    axes.set_ylabel("messages")
    charts.append((f"quaero[{name}] queue length over time", png(figure)))

    figure = Figure(figsize=(7, 3.2), layout="tight")
    axes = figure.add_subplot()
    workers = sorted(result.workers, key=lambda w: w.index)
    labels = [w.name for w in workers]
    values = [w.utilization for w in workers]
    bars = axes.bar(labels, values, color=["tab:blue" if w.start_offset is not None else "tab:gray" for w in workers])
    for bar, worker in zip(bars, workers, strict=True):
        text = f"{worker.utilization:.0f}% / {worker.jobs} jobs" if worker.start_offset is not None else "never started"
        axes.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                      fontsize="small")
    axes.axhline(80, color="tab:red", linestyle="--", linewidth=1, label="template target 80%")
    axes.set_ylim(0, 110)
    axes.set_title(f"quaero[{name}]: utilization per worker")
    axes.set_ylabel("% of lifetime busy")
    axes.legend(loc="upper right", fontsize="small")
    charts.append((f"quaero[{name}] utilization per worker", png(figure)))

    figure = Figure(figsize=(7, 3.2), layout="tight")
    axes = figure.add_subplot()
    times = [t * 1000 for t in result.processing_times]
    if times:
        axes.hist(times, bins=min(40, max(5, len(times) // 5)))
        axes.axvline(result.p95 * 1000, color="tab:red", linestyle="--", linewidth=1,
                     label=f"p95 {result.p95 * 1000:.1f}ms")
        axes.legend(loc="upper right", fontsize="small")
    else:
        axes.text(0.5, 0.5, "no job completed", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(f"quaero[{name}]: processing time (receive to done), {len(times)} jobs")
    axes.set_xlabel("milliseconds")
    axes.set_ylabel("jobs")
    charts.append((f"quaero[{name}] processing time distribution", png(figure)))
    return charts


class HtmlIntegration:
    """pytest-html hooks; an instance is registered only when pytest-html is active."""

    def __init__(self, config: pytest.Config, quaero: QuaeroSession) -> None:
        self.config = config
        self.quaero = quaero
        #: run id -> nodeid of the test whose report carried it (for the summary's pointers)
        self.carriers: dict[str, str] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # pytest-html reads the environment table at its own (trylast) sessionstart
        try:
            # deferred: pytest-metadata comes with pytest-html, an optional extra
            from pytest_metadata.plugin import metadata_key
        except ImportError:  # pragma: no cover - pytest-html depends on pytest-metadata
            return
        metadata = self.config.stash.get(metadata_key, None)
        if metadata is None:
            return
        settings = self.quaero.settings
        metadata["Python"] = platform.python_version()
        metadata["SQLite"] = sqlite3.sqlite_version
        metadata["pytest-quaero"] = plugin_version()
        metadata["quaero settings"] = {
            name: f"{settings.describe(name)} ({settings.sources.get(name, 'default')})" for name in settings.as_dict()
        }

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        # pytest-html pairs header and row cells by index: insert at the same place in both
        for offset, (_, key, title) in enumerate(COLUMNS):
            cells.insert(_INSERT_AT + offset, f'<th class="sortable" data-column-type="{key}">{title}</th>')

    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        if not cells:  # another plugin dropped this row
            return
        props = _properties(report)
        for offset, (prop, key, _) in enumerate(COLUMNS):
            value = props.get(prop, "")
            cells.insert(_INSERT_AT + offset, f'<td class="col-{key}">{escape(str(value))}</td>')

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        carried = getattr(report, "quaero_results", None)
        if not carried:
            return
        # deferred: pytest-html is an optional extra; this hook only runs when it is active
        from pytest_html import extras

        added = list(getattr(report, "extras", None) or [])
        for data in carried:
            result = RunResult.from_dict(data)
            self.carriers[result.run_id] = report.nodeid
            added.append(extras.html(criteria_table_html(result, result.scenario)))
            added.append(extras.html(lock_table_html(result, result.scenario)))
            added.append(extras.html(counts_table_html(result, result.scenario)))
            added.append(extras.html(detection_html(result, result.scenario)))
            try:
                charts = render_charts(result)
            except ImportError:
                added.append(extras.html(f"<p class=\"quaero-charts-hint\">{escape(CHARTS_HINT)}</p>"))
                continue
            added.extend(extras.png(content, name=name) for name, content in charts)
        report.extras = added  # type: ignore[attr-defined]  # pytest-html's documented way: it reads report.extras

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str],
                                    session: pytest.Session) -> None:
        results = self.quaero.results
        if not results:
            return
        failed = [r for r in results if not r.passed]
        parts = [
            f"<div class=\"quaero-summary\"><h2>quaero load test: {'FAIL' if failed or not results else 'PASS'}</h2>"
            "<p>SQLite " + escape(sqlite3.sqlite_version) + ", Python " + escape(platform.python_version()) + ". "
        ]
        try:
            # deferred: only asks whether the optional ``charts`` extra is installed
            import matplotlib  # noqa: F401 (imported to test that it is installed)

            parts.append("Charts for each scenario are in the details of the test that ran it.</p>")
        except ImportError:
            parts.append(escape(CHARTS_HINT) + ".</p>")
        for result in results:
            where = self.carriers.get(result.run_id)
            parts.append(criteria_table_html(result, result.scenario))
            if where:
                parts.append(f"<p>Details and charts: <code>{escape(where)}</code></p>")
        parts.append("</div>")
        prefix.append("".join(parts))
