"""The team's load-test template, filled in from measurements: what ``--quaero-report=PATH.md`` writes.

The output keeps the template's title, sections, tables and order. Every bracketed
placeholder becomes a measured value or ``not measured: <why, and the option that
measures it>``; every claim the template makes ("Linear scaling", "All retry
operations successful", "APPROVED FOR PRODUCTION") appears only when this session's
numbers say so. Nothing here measures anything: it reads :class:`RunResult` objects
(the ones that travelled to this process on test reports) and a little context.

This module is the order: :data:`SECTIONS` lists the section renderers of
:mod:`pytest_quaero.report.sections` in the template's order, and :func:`render` walks
it over the figures :mod:`pytest_quaero.report.figures` computes once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.report.figures import (
    LINEAR_MIN_FACTOR,
    MAX_QUEUE_ROWS,
    ReportContext,
    ReportFigures,
    failed_verdicts,
    group_by_scenario,
)
from pytest_quaero.report.sections import appendix, locks, metrics, observations, recommendations, summary, workers
from pytest_quaero.report.sections.summary import criteria_rows, criteria_table
from pytest_quaero.report.wording import status

__all__ = [
    "LINEAR_MIN_FACTOR",
    "MAX_QUEUE_ROWS",
    "SECTIONS",
    "ReportContext",
    "criteria_rows",
    "render",
    "step_summary",
]

Section = Callable[[ReportFigures], list[str]]

#: the template's sections, in its order; each returns its lines, headings included
SECTIONS: tuple[Section, ...] = (
    summary.executive_summary,  # # Job Load Test Results, ## Executive Summary
    summary.system_configuration,  # ## Test Configuration
    summary.scenario_plan,
    summary.result_tables,  # ## Test Results
    metrics.busy_error_analysis,  # ## Detailed Metrics
    metrics.retry_success_rate,
    metrics.retry_attempts,
    locks.write_lock_section,  # (not in the template) the write lock, per operation
    locks.work_per_job_section,  # (not in the template) the counted database work, per operation and job
    metrics.message_statistics,
    metrics.queue_under_load,
    metrics.relationship_validation,
    metrics.consistency_checks,
    workers.worker_startup,
    workers.queue_statistics,
    workers.performance_metrics,
    workers.scalability_analysis,
    observations.expected_behavior,  # ## Observations
    observations.performance_characteristics,
    observations.edge_cases,
    locks.detection_section,  # (not in the template) per-message checks; closes Observations
    observations.critical_issues,  # ## Remaining Issues (if any)
    observations.priority_issues,
    recommendations.production_readiness,  # ## Recommendations
    recommendations.production_settings,
    recommendations.optimization_suggestions,
    recommendations.future_testing,
    recommendations.monitoring_alerting,
    recommendations.deployment_checklist,
    appendix.retry_excerpt,  # ## Appendix
    appendix.stagger_excerpt,
    appendix.query_results,
    appendix.execution_timeline,
    appendix.footer,
)


def render(ctx: ReportContext) -> str:
    """The filled-in template for ``ctx.results``."""
    figures = ReportFigures(ctx)
    lines = [line for section in SECTIONS for line in section(figures)]
    return "\n".join(lines) + "\n"


def step_summary(results: Sequence[RunResult]) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: a status line and each scenario's criteria table."""
    failed = failed_verdicts(results)
    verdicts = sum(len(r.verdicts) for r in results)
    lines = [f"## pytest-quaero load test: {'FAIL' if failed or not results else 'PASS'}", ""]
    lines.append(f"{verdicts - len(failed)} of {verdicts} criteria passed in {len(results)} scenario run(s).")
    for runs in group_by_scenario(results).values():
        for run in runs:
            r = run.result
            lines += ["", f"### quaero[{run.label}] {r.parents} x {r.children_per_parent} = {r.total_jobs} jobs: "
                      f"{status(r.passed)}", ""]
            lines += criteria_table(criteria_rows(r))
    return "\n".join(lines) + "\n"
