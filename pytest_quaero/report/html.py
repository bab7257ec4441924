"""pytest-html integration: extra columns, criteria, write-lock, work and detection tables, charts, the environment.

Registered by :func:`pytest_quaero.report.outputs.configure` only when pytest-html is active
(its hooks would otherwise be unknown to pytest), and only in the process that writes
the HTML (the xdist controller, or the only process). Everything it shows comes from
the test reports: the criterion items' ``user_properties`` (scenario, measured,
required) and the results carried on reports (``report.quaero_results``), so an xdist
run renders exactly what a single-process run does.

Charts (queue length over time, per-worker utilization, processing-time distribution)
are drawn with matplotlib, the optional ``charts`` extra, and shown full width in the
summary section as inline PNGs (readable without a click; pytest-html's carousel would
show them as thumbnails); a row's tables link to them. A failed run's tables sit on its
first failing criterion's row, which pytest-html expands. Without matplotlib the report
says how to get them.
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
from pytest_quaero.report.exploration import exploration_html
from pytest_quaero.report.locks import detection_checks, lock_table
from pytest_quaero.report.wording import describe_pool, first_of_each, words_of
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


#: pytest-html's stylesheet draws no cell borders and colours only its own cells; inline styles survive
#: --self-contained-html and assets alike
_TABLE_STYLE = "border-collapse: collapse; margin: 0.5em 0; color: #222; font-size: 13px"
_CELL_STYLE = "border: 1px solid #999; padding: 2px 6px; text-align: left"
_HEAD_STYLE = _CELL_STYLE + "; background: #eee"
_STATUS_STYLE = {True: "color: #0a7d28; font-weight: bold", False: "color: #c00; font-weight: bold"}
_FAIL_ROW_STYLE = "background: #fde8e8"
#: charts are drawn this big (inches at _CHART_DPI): 960 px wide, shown at the page's width up to that
_CHART_SIZE, _CHART_DPI = (10.0, 3.6), 96


def _status_cell(passed: bool) -> str:
    return (f"<td class=\"{'passed' if passed else 'failed'}\" style=\"{_CELL_STYLE}; {_STATUS_STYLE[passed]}\">"
            f"{'PASS' if passed else 'FAIL'}</td>")


def _peak(result: RunResult) -> str:
    if result.peak_queue_length == 0 and result.messages_enqueued > 0:
        return "not measured (the run was shorter than the sampling interval)"
    return str(result.peak_queue_length)


def anchor(label: str) -> str:
    """The id of a run's block in the summary (``quaero-run-<run id>``)."""
    return "quaero-run-" + re.sub(r"[^A-Za-z0-9_-]+", "-", label)


def criteria_table_html(result: RunResult, label: str, link: str | None = None) -> str:
    """The run's criteria, bordered, FAIL in red; ``link`` (a row id) makes the heading point at that row."""
    status = "PASS" if result.passed else "FAIL"
    fail_row = f" style=\"{_FAIL_ROW_STYLE}\""
    rows = "".join(
        f"<tr{'' if v['passed'] else fail_row}><td style=\"{_CELL_STYLE}\">"
        f"{escape(v['title'])}</td><td style=\"{_CELL_STYLE}\">{escape(str(v['measured']))}</td>"
        f"<td style=\"{_CELL_STYLE}\">{escape(str(v['required']))}</td>{_status_cell(bool(v['passed']))}</tr>"
        for v in result.verdicts
    )
    head = "".join(f"<th style=\"{_HEAD_STYLE}\">{h}</th>" for h in ("Criterion", "Measured", "Required", "Status"))
    pool = describe_pool(result.extra)
    name = f"quaero[{escape(label)}]"
    title = f"<a href=\"#{escape(link, quote=True)}\">{name}</a>" if link else name
    return (
        f"<div class=\"quaero-scenario\"><h3>{title} {result.parents} x {result.children_per_parent} = "
        f"{result.total_jobs} jobs: <span class=\"{'passed' if result.passed else 'failed'}\" "
        f"style=\"{_STATUS_STYLE[result.passed]}\">{status}</span></h3>"
        f"<p>{result.jobs_completed}/{result.total_jobs} jobs in {result.execution_time:.2f}s, "
        f"{result.throughput:.1f} jobs/s, p95 processing {result.p95 * 1000:.1f}ms, {result.busy_errors} "
        f"{words_of(result).errors}, "
        f"peak queue {_peak(result)}; run {escape(result.run_id)}"
        + (f"; {escape(pool)}" if pool else "") + "</p>" + exploration_html(result) +
        f"<table class=\"quaero-criteria\" style=\"{_TABLE_STYLE}\"><thead><tr>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _bordered(css: str, headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    def row(cells: tuple[str, ...], tag: str) -> str:
        return "<tr>" + "".join(f"<{tag} style=\"{_CELL_STYLE}\">{escape(c)}</{tag}>" for c in cells) + "</tr>"

    body = "".join(row(cells, "td") for cells in rows)
    return (f"<table class=\"{css}\" style=\"{_TABLE_STYLE}\"><thead>{row(headers, 'th')}</thead>"
            f"<tbody>{body}</tbody></table>")


def _databases(results: list[RunResult]) -> str:
    """``SQLite 3.40.1`` and/or ``PostgreSQL 18.6``: the databases the session's runs used."""
    names = []
    for backend, result in first_of_each(results).items():
        server = result.extra.get("postgresql", {}).get("server_version") if backend == "postgresql" else None
        names.append(f"PostgreSQL {server or '(version not recorded)'}" if backend == "postgresql"
                     else f"SQLite {sqlite3.sqlite_version}")
    return ", ".join(names) or f"SQLite {sqlite3.sqlite_version}"


def lock_table_html(result: RunResult, label: str) -> str:
    """The run's write-lock table (hold and writer wait per operation), bordered, or why it was not measured."""
    table, words = lock_table(result), words_of(result)
    heading = f"<h4>quaero[{escape(label)}] {words.lock}</h4>"
    if table.missing:
        return f"<div class=\"quaero-locks\">{heading}<p>{escape(table.missing)}</p></div>"
    rows = _bordered("quaero-locks-table", table.HEADERS, [table.cells(r) for r in table.rows])
    return (f"<div class=\"quaero-locks\">{heading}<p>{escape(words.hold_wait)} {table.connections} connections "
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
    return (f"<div class=\"quaero-detection\" style=\"color: #222\"><h4>quaero[{escape(label)}] detection checks"
            f"</h4><ul>{items}</ul></div>")


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
        figure.savefig(buffer, format="png", dpi=_CHART_DPI)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    charts: list[tuple[str, str]] = []
    name = result.scenario

    def legend(figure: Any) -> None:
        # beside the plot, never over a bar's label or the data
        figure.legend(loc="outside right upper", fontsize="small")

    figure = Figure(figsize=_CHART_SIZE, layout="constrained")
    axes = figure.add_subplot()
    samples = result.queue_samples
    if samples and result.peak_queue_length == 0 and result.messages_enqueued > 0:
        axes.text(0.5, 0.5, f"not measured: the run ({result.execution_time:.2f}s) was shorter than the sampling "
                  f"interval;\nits {len(samples)} samples saw none of the {result.messages_enqueued} messages",
                  ha="center", va="center", transform=axes.transAxes)
    elif samples:
        offsets = [s[0] for s in samples]
        # markers show where the samples are: a short run has only a handful
        axes.step(offsets, [s[1] for s in samples], where="post", marker="o", markersize=3, label="total")
        axes.step(offsets, [s[2] for s in samples], where="post", marker=".", label="visible")
        axes.step(offsets, [s[3] for s in samples], where="post", marker=".", label="in flight")
        legend(figure)
    else:
        axes.text(0.5, 0.5, "no queue sample recorded", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(f"quaero[{name}]: queue length over time")
    axes.set_xlabel("seconds since run start")
    axes.set_ylabel("messages")
    charts.append((f"quaero[{name}] queue length over time", png(figure)))

    figure = Figure(figsize=_CHART_SIZE, layout="constrained")
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
    axes.set_ylim(0, 115)
    axes.set_title(f"quaero[{name}]: utilization per worker")
    axes.set_ylabel("% of lifetime busy")
    legend(figure)
    charts.append((f"quaero[{name}] utilization per worker", png(figure)))

    figure = Figure(figsize=_CHART_SIZE, layout="constrained")
    axes = figure.add_subplot()
    times = [t * 1000 for t in result.processing_times]
    if times:
        axes.hist(times, bins=min(40, max(5, len(times) // 5)))
        axes.axvline(result.p95 * 1000, color="tab:red", linestyle="--", linewidth=1,
                     label=f"p95 {result.p95 * 1000:.1f}ms")
        legend(figure)
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
        #: run id -> nodeid of the row that shows its tables (the summary links there)
        self.carriers: dict[str, str] = {}
        #: run id -> the run, as its report carried it
        self.results: dict[str, RunResult] = {}
        #: run id -> its charts, drawn once, [] without matplotlib
        self.charts: dict[str, list[tuple[str, str]]] = {}
        #: ``quaero[light]`` -> the criterion item whose setup ran the load (its Duration is the load's)
        self.loads: dict[str, str] = {}
        #: ``quaero[light]`` -> a failed run whose tables wait for its first failing criterion's row
        self.pending: dict[str, RunResult] = {}

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

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        carried = getattr(report, "quaero_results", None)
        node = report.nodeid.split("::", 1)[0] if report.nodeid.startswith("quaero[") else None
        if carried:
            for data in carried:
                self._carried(report, RunResult.from_dict(data), node)
        elif node is not None and report.when == "call" and report.failed:
            self._failed_criterion(report, node)

    def _details(self, result: RunResult) -> list[Any]:
        """A row's extras: the criteria, write-lock, work and detection tables, and where the charts are."""
        # deferred: pytest-html is an optional extra; this hook only runs when it is active
        from pytest_html import extras

        charts = self._charts(result)
        where = (f"<p class=\"quaero-charts-link\">Charts: <a href=\"#{anchor(result.run_id)}\">in the summary at the "
                 "top of this page</a>, full width.</p>" if charts else
                 f"<p class=\"quaero-charts-hint\">{escape(CHARTS_HINT)}</p>")
        return [extras.html(criteria_table_html(result, result.scenario)), extras.html(where),
                extras.html(lock_table_html(result, result.scenario)),
                extras.html(counts_table_html(result, result.scenario)),
                extras.html(detection_html(result, result.scenario))]

    def _charts(self, result: RunResult) -> list[tuple[str, str]]:
        """The run's charts, drawn once ([] without matplotlib)."""
        if result.run_id not in self.charts:
            try:
                self.charts[result.run_id] = render_charts(result)
            except ImportError:
                self.charts[result.run_id] = []
        return self.charts[result.run_id]

    def _carried(self, report: pytest.TestReport, result: RunResult, node: str | None) -> None:
        self.results[result.run_id] = result
        if node is not None:
            self.loads[node] = report.nodeid
        if node is not None and report.passed and not result.passed:
            # A criterion of this run fails further down: its row, expanded by pytest-html, gets the
            # details, rather than this passing (collapsed) row that only carried the load.
            self.pending[node] = result
            return
        self.carriers[result.run_id] = report.nodeid
        _add_extras(report, self._details(result))

    def _failed_criterion(self, report: pytest.TestReport, node: str) -> None:
        result = self.pending.pop(node, None)
        if result is not None:
            self.carriers[result.run_id] = report.nodeid
            _add_extras(report, self._details(result))
            return
        first = next((self.carriers[r.run_id] for r in self.results.values()
                      if self.carriers.get(r.run_id, "").startswith(node + "::")), None)
        if first is not None:
            # deferred: pytest-html is an optional extra; this hook only runs when it is active
            from pytest_html import extras

            _add_extras(report, [extras.html(f"<p>This run's tables: <a href=\"#{escape(first, quote=True)}\">"
                                             f"{escape(first)}</a>.</p>")])

    def pytest_html_results_table_row(self, report: Any, cells: list[str]) -> None:
        if not cells:  # another plugin dropped this row
            return
        props = _properties(report)
        for offset, (prop, key, _) in enumerate(COLUMNS):
            value = props.get(prop, "")
            cells.insert(_INSERT_AT + offset, f'<td class="col-{key}">{escape(str(value))}</td>')
        node = report.nodeid.split("::", 1)[0] if report.nodeid.startswith("quaero[") else None
        carrier = self.loads.get(node) if node is not None else None
        if carrier is None:
            return
        for i, cell in enumerate(cells):
            if cell.startswith('<td class="col-duration">') and report.nodeid == carrier:
                cells[i] = cell.replace("</td>", " (the load run, in this item's setup)</td>")
            elif cell.startswith('<td class="col-duration">'):
                # the criterion only reads the verdict; its time is the load's, shown on the carrier
                link = f"<a href=\"#{escape(carrier, quote=True)}\">{escape(carrier)}</a>"
                cells[i] = cell.replace("</td>", f" (judged from the load run timed on {link})</td>")

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str],
                                    session: pytest.Session) -> None:
        results = self.quaero.results
        if not results:
            return
        failed = [r for r in results if not r.passed]
        parts = [
            # the postfix spans the page; the prefix sits in pytest-html's 550 px summary column
            f"<div class=\"quaero-summary\" style=\"max-width: 1000px\"><h2>quaero load test: "
            f"{'FAIL' if failed else 'PASS'}</h2>"
            "<p>" + escape(_databases(results)) + ", Python " + escape(platform.python_version()) + ". "
            "Each scenario's criteria, then its charts; the scenario's name links to the test row with its tables.</p>"
        ]
        for result in results:
            where = self.carriers.get(result.run_id) or self.loads.get(f"quaero[{result.scenario}]")
            parts.append(f"<div id=\"{anchor(result.run_id)}\">")
            parts.append(criteria_table_html(result, result.scenario, link=where))
            charts = self._charts(result)
            if not charts:
                parts.append(f"<p class=\"quaero-charts-hint\">{escape(CHARTS_HINT)}.</p>")
            for name, content in charts:
                parts.append(f"<figure class=\"quaero-chart\" style=\"margin: 0.5em 0\"><img alt=\"{escape(name)}\" "
                             f"src=\"data:image/png;base64,{content}\" style=\"width: 100%; max-width: 960px; "
                             f"display: block\"><figcaption>{escape(name)}</figcaption></figure>")
            parts.append("</div>")
        parts.append("</div>")
        postfix.append("".join(parts))


def _add_extras(report: Any, added: list[Any]) -> None:
    # pytest-html's documented way: it reads report.extras
    report.extras = [*(getattr(report, "extras", None) or []), *added]
