"""Recommendations: readiness, settings to adopt, what to watch, what to test next, the checklist.

"APPROVED FOR PRODUCTION" appears only when every criterion passed in every template
scenario; every alert threshold of the template is checked against this session.
"""

from __future__ import annotations

from typing import Any

from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.settings import to_toml
from pytest_quaero.report.figures import ReportFigures, Totals
from pytest_quaero.report.sections.observations import UTILIZATION_TARGET
from pytest_quaero.report.sections.summary import claim_text, recommendation
from pytest_quaero.report.wording import (
    FAIL_ICON,
    NONE_ICON,
    PASS_ICON,
    POSTGRESQL,
    duration,
    first_of_each,
    mark,
    names,
    not_measured,
    pct,
)

__all__ = [
    "deployment_checklist",
    "future_testing",
    "monitoring_alerting",
    "optimization_suggestions",
    "production_readiness",
    "production_settings",
    "utilization_scope",
]

_NO_MEMORY = "pytest-quaero does not sample memory"
_NO_PRAGMAS = "no run read the pragmas back"
#: the TOML keeps the SQLite section's names (the one format --quaero-config reads); what they mean on the server
_POSTGRESQL_SETTINGS = (
    " On PostgreSQL `busy_timeout_ms` is the server's lock_timeout and `synchronous` NORMAL or OFF is "
    "synchronous_commit=off (FULL and EXTRA: on); `wal_mode`, `cache_size_mb` and `begin_immediate` have no "
    "PostgreSQL counterpart and change nothing there.")


def production_readiness(figures: ReportFigures) -> list[str]:
    """The approval, and the template's pass/fail criteria across every run."""
    t = figures.totals
    lines = ["## Recommendations", "", "### Production Readiness Assessment"]
    if figures.overall_passed and not figures.missing_template_scenarios():
        lines.append(f"**Status:** {PASS_ICON} **APPROVED FOR PRODUCTION**")
    elif figures.failed or figures.claims or not figures.results:
        lines.append(f"**Status:** {FAIL_ICON} **NOT APPROVED**")
    else:
        lines.append(f"**Status:** {NONE_ICON} **NOT YET APPROVED** (not every template scenario was measured)")
    lines += ["", recommendation(figures), ""]
    if figures.results:
        lines += [f"Pass/fail criteria across {names(figures.labels)}:", ""]
        per_run = ", ".join(f"{run.label} {run.result.busy_errors}" for run in figures.runs)
        lines.append(f"- {mark(t.busy == 0)} {figures.words.zero}: {t.busy} ({per_run})")
        lines.append(f"- {mark(t.deleted == t.enqueued and t.left == 0)} 100% queue message deletion success rate: "
                     f"{t.deleted}/{t.enqueued} deleted")
        lines.append(f"- {mark(t.min_integrity >= 100.0)} 100% job hierarchy integrity maintenance: "
                     f"{pct(t.min_integrity)} at worst")
        s = figures.scaling
        lines.append(f"- {mark(s.linear)} Linear performance scaling up to {s.largest} concurrent jobs: "
                     f"{s.verdict_text}")
        if t.busy == 0:
            lines.append(f"- {NONE_ICON} Robust retry logic handling transient database locks: " + not_measured(
                "no lock error occurred, so retries were not exercised"))
        else:
            lines.append(f"- {mark(t.exhausted == 0)} Robust retry logic handling transient database locks: "
                         f"{t.successful_retries} operations recovered, {t.exhausted} gave up")
    lines.append("")
    return lines


def production_settings(figures: ReportFigures) -> list[str]:
    """The session's effective settings as TOML that ``--quaero-config`` loads back."""
    return [
        "### Configuration Tuning", "", "#### Recommended Production Settings",
        "The effective settings of this session, in Quaero's TOML format; `pytest --quaero-config=FILE` loads them "
        "back" + (" (they passed every criterion measured and met the template's claims)." if figures.overall_passed
                  else " (they did NOT pass every criterion and claim: tune before adopting them).")
        + (_POSTGRESQL_SETTINGS if figures.words.postgresql else ""),
        "```toml", *to_toml(figures.settings).rstrip("\n").splitlines(), "```", "",
    ]


def optimization_suggestions(figures: ReportFigures) -> list[str]:
    t = figures.totals
    lines = ["#### Performance Optimization Suggestions"]
    if figures.results:
        lines.append(f"1. **Monitor Queue Length:** Set up alerts for queue length > 100 messages (this session "
                     f"peaked at {t.peak}, averaging {t.avg_queue:.1f}{_unsampled(figures)})")
        lines.append(f"2. **Database Monitoring:** {figures.words.track} (should remain at 0; this session: "
                     f"{t.busy})")
        lines.append(f"3. **Worker Utilization:** Ensure workers maintain >{UTILIZATION_TARGET:.0f}% utilization "
                     f"(this session averaged {pct(t.avg_utilization)}{utilization_scope(t)})")
    else:
        why = not_measured("no scenario ran (--quaero-scenario)")
        lines += [f"1. **Monitor Queue Length:** {why}", f"2. **Database Monitoring:** {why}",
                  f"3. **Worker Utilization:** {why}"]
    lines += ["4. **Memory Usage:** Monitor memory consumption during peak load periods ("
              + not_measured(_NO_MEMORY) + ")", ""]
    return lines


def _unsampled(figures: ReportFigures) -> str:
    """Which runs the peak leaves out because their samples missed every message."""
    missed = figures.totals.unsampled
    return f"; not measured in {names(missed)}: shorter than the sampling interval" if missed else ""


def utilization_scope(t: Totals) -> str:
    """Which workers an average utilization counts, when some started but processed no job."""
    if not t.idle_workers:
        return ""
    return (f", over the {t.utilization_workers} workers that processed jobs; {t.idle_workers} started after the "
            "queue was empty and are left out")


def future_testing(figures: ReportFigures) -> list[str]:
    """The template's next test scenarios, each against what this session covered."""
    longest = max((r.total_duration for r in figures.results), default=0.0)
    return [
        "### Future Testing Needs", "", "#### Recommended Test Scenarios",
        f"1. **Extended Duration Tests:** 24-hour continuous operation tests (longest run in this session: "
        f"{duration(longest)})",
        f"2. **Resource Exhaustion:** Tests with constrained memory/CPU (this session: "
        f"{figures.ctx.machine.get('cpu_count', '?')} CPUs, unconstrained)",
        f"3. **Network Failure Simulation:** Tests with intermittent connectivity ({figures.words.network})",
        "4. **Mixed Workload Tests:** Combination of different job types simultaneously (this session ran "
        "one job type: crawler_url children of parent jobs)", "",
    ]


def monitoring_alerting(figures: ReportFigures) -> list[str]:
    """The template's alerts, each with this session's value and whether it would have fired."""
    lines = ["#### Monitoring and Alerting", "```"]
    if not figures.results:
        lines += ["Critical Alerts:", f"  - {figures.words.alert}",
                  "  - Queue message processing rate < 1 msg/sec", "  - Worker utilization < 50% for > 10 minutes",
                  "  - Job failure rate > 5% in any 1-hour period", "", "Warning Alerts:",
                  "  - Queue length > 100 messages",
                  "  - Job completion time > 10 minutes (95th percentile)", "  - Memory usage > 80% of available",
                  "", "(" + not_measured("no scenario ran, so no alert can be checked against this session") + ")",
                  "```", ""]
        return lines
    t, results = figures.totals, figures.results
    seconds = sum(r.execution_time for r in results)
    rate = t.deleted / seconds if seconds else 0.0
    failure = 100.0 * t.failed_jobs / t.children_expected if t.children_expected else 0.0
    p95_latency = max((r.latency_p95 for r in results), default=0.0)
    # (alert, this session's value, would it fire: None when it cannot be judged)
    critical: list[tuple[str, str, bool | None]] = [
        (figures.words.alert, f"{t.busy} in {duration(seconds)}", t.busy > 0),
        ("Queue message processing rate < 1 msg/sec", f"{rate:.1f} msg/sec", rate < 1),
        ("Worker utilization < 50% for > 10 minutes", f"average {pct(t.avg_utilization)} over {duration(seconds)}",
         t.avg_utilization < 50 and seconds > 600),
        ("Job failure rate > 5% in any 1-hour period", f"{failure:.1f}%", failure > 5),
    ]
    warning: list[tuple[str, str, bool | None]] = [
        ("Queue length > 100 messages", f"peak {t.peak}{_unsampled(figures)}", t.peak > 100),
        ("Job completion time > 10 minutes (95th percentile)", f"p95 latency {duration(p95_latency)}",
         p95_latency > 600),
        ("Memory usage > 80% of available", not_measured(_NO_MEMORY), None),
    ]
    for heading, alerts in (("Critical Alerts:", critical), ("Warning Alerts:", warning)):
        if heading != "Critical Alerts:":
            lines.append("")
        lines.append(heading)
        for text, value, fired in alerts:
            state = "" if fired is None else (" -> would fire" if fired else " -> quiet")
            lines.append(f"  - {text:<52} (this session: {value}{state})")
    lines += ["```", ""]
    return lines


def deployment_checklist(figures: ReportFigures) -> list[str]:
    """The template's checklist, each item noting what this run verified (its database's items for each backend)."""
    json_path = figures.ctx.json_path
    json_note = f"this session's JSON results: {json_path}" if json_path else \
        "no JSON written; --quaero-json=PATH records one"
    firsts = first_of_each(figures.results)
    database: list[tuple[str, str]] = []
    for backend in list(firsts) or list(figures.words.backends):
        first = firsts.get(backend)
        database += (_postgresql_items(first, figures) if backend == POSTGRESQL
                     else _sqlite_items(first.pragmas if first is not None else {}))
    items = [
        ("Apply database schema updates", figures.words.schema if figures.results else "no run"),
        ("Configure production queue settings", "see Recommended Production Settings above"),
        *database,
        ("Implement monitoring dashboards", "see Monitoring and Alerting above"),
        ("Set up alerting for critical metrics", "see Monitoring and Alerting above"),
        ("Conduct performance baseline measurement", json_note),
        ("Train operations team on monitoring procedures", "an operational step, not measurable here"),
    ]
    # Unchecked on purpose: these are deployment steps for people; the notes say what this run verified.
    return ["### Deployment Checklist", *(f"- [ ] {item} ({note})" for item, note in items), "", "---", ""]


def _sqlite_items(pragmas: dict[str, Any]) -> list[tuple[str, str]]:
    wal = str(pragmas.get("journal_mode", "")).lower() == "wal"
    busy = int(pragmas.get("busy_timeout_ms", 0) or 0)
    return [
        ("Enable WAL mode in SQLite configuration",
         f"this run read back journal_mode={pragmas.get('journal_mode')}" + ("" if wal else ": NOT WAL")
         if pragmas else not_measured(_NO_PRAGMAS)),
        ("Set appropriate busy timeout (10000ms recommended)",
         f"this run read back busy_timeout={busy}ms" if pragmas else not_measured(_NO_PRAGMAS)),
    ]


def _postgresql_items(first: RunResult | None, figures: ReportFigures) -> list[tuple[str, str]]:
    """The server's counterparts: there is no journal mode to enable; durability, lock_timeout and the claim."""
    pragmas = first.pragmas if first is not None else {}
    unread = not_measured("no run read the server's settings back")
    durable = str(pragmas.get("synchronous_commit", "")).lower() != "off"
    return [
        ("Choose synchronous_commit for the durability needed",
         f"this run read back synchronous_commit={pragmas.get('synchronous_commit')}"
         + ("" if durable else ": a server crash may lose the last commits, never corrupt the database")
         if pragmas else unread),
        ("Set appropriate lock timeout (10000ms recommended)",
         f"this run read back lock_timeout={pragmas.get('lock_timeout_ms')}ms" if pragmas else unread),
        ("Claim queue messages with FOR UPDATE SKIP LOCKED",
         f"isolation {pragmas.get('isolation')} read back; {claim_text(figures)}" if pragmas else unread),
    ]
