"""Turning lock fixes off: the settings they map to, real counted errors, and the before/after runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pytest_quaero.core.contention import ContentionLoad
from pytest_quaero.core.criteria import Thresholds, evaluate
from pytest_quaero.core.fixes import FIXES, FixError, compare_fixes, comparison_lines, disable, figures, parse_fixes
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings

TINY = Scenario("tiny", 3, 10, 30.0)
FAST = Settings().replace(job_time="1ms", stagger="0ms", poll_interval="10ms", visibility_timeout="300ms",
                          retry_backoff="10ms", workers=2)


def test_each_fix_maps_to_its_off_setting() -> None:
    off = disable(Settings(), list(FIXES))
    assert (off.wal, off.busy_timeout_ms, off.retry_attempts, off.stagger, off.begin_immediate) == \
        (False, 0, 1, 0.0, False)
    assert off.sources["busy_timeout_ms"] == "--quaero-disable"
    one = disable(Settings(), ["stagger"])
    assert one.stagger == 0.0 and one.wal is True and one.busy_timeout_ms == 10_000


def test_fix_names() -> None:
    assert parse_fixes("wal, busy-timeout,retries") == ["wal", "busy_timeout", "retries"]
    assert parse_fixes("all") == list(FIXES)
    with pytest.raises(FixError, match=r"--quaero-disable=wal,fsync: unknown fix 'fsync'; allowed: wal, busy_timeout"):
        parse_fixes("wal,fsync")
    with pytest.raises(FixError, match="name at least one fix"):
        parse_fixes(" , ")


def test_disabled_fixes_produce_real_counted_errors_and_the_run_still_finishes(tmp_path: Path) -> None:
    # Every fix off, and a writer holding the lock half the time: busy errors must escape
    # producers and workers, be counted, and the run must still end (bounded) with a result.
    settings = disable(FAST, list(FIXES))
    started = time.monotonic()
    result = run_scenario(TINY, settings, run_dir=tmp_path, deadline=5.0, sample_interval=0.05,
                          disturbances=[ContentionLoad.from_spec("writer:hold=30ms,every=60ms")])
    assert time.monotonic() - started < 15
    assert result.pragmas["journal_mode"] == "delete" and result.pragmas["busy_timeout_ms"] == 0
    totals = result.retry_totals
    assert totals.busy_events > 0
    assert totals.exhausted == totals.busy_events  # one attempt each: every busy error escaped
    assert totals.retried_operations == 0
    escaped_texts = result.producer_errors + result.worker_errors
    assert any("SQLITE_BUSY" in text for text in escaped_texts), escaped_texts
    verdicts = {v.criterion: v for v in evaluate(result, Thresholds(max_execution_time=5.0))}
    assert not verdicts["sqlite_busy_errors"].passed
    # judged against what it ran with: stagger 0, so an unstaggered pool is not a stagger failure
    assert verdicts["worker_staggering"].passed, verdicts["worker_staggering"]


def test_compare_fixes_fills_before_after_and_ablation(tmp_path: Path) -> None:
    after = run_scenario(TINY, FAST, run_dir=tmp_path / "after", deadline=10.0, sample_interval=0.05)
    thresholds = Thresholds(max_execution_time=10.0)
    after.verdicts = [v.as_dict() for v in evaluate(after, thresholds)]
    # contention in every variant, so the all-off run meets locks for certain
    comparison = compare_fixes(
        after, TINY, FAST, thresholds=thresholds, work_dir=tmp_path / "variants",
        run_options=lambda: {"disturbances": [ContentionLoad.from_spec("writer:hold=30ms,every=60ms")],
                             "sample_interval": 0.05},
    )
    assert after.extra["fix_comparison"] is comparison
    assert comparison["before"]["settings"] == {"wal": False, "busy_timeout_ms": 0, "retry_attempts": 1,
                                                "stagger": 0.0, "begin_immediate": False}
    assert comparison["busy_errors_before"] > 0
    assert comparison["busy_errors_after"] == after.busy_errors == 0
    assert comparison["improvement_pct"] == 100.0
    assert "sqlite_busy_errors" in comparison["before"]["criteria_failed"]
    assert [row["fix"] for row in comparison["ablation"]] == list(FIXES)
    without_timeout = next(row for row in comparison["ablation"] if row["fix"] == "busy_timeout")
    assert without_timeout["settings"]["busy_timeout_ms"] == 0 and without_timeout["settings"]["wal"] is True
    assert without_timeout["busy_errors"] > 0  # busy_timeout is what absorbs the writer's lock
    assert without_timeout["delta_busy_errors"] == without_timeout["busy_errors"]
    assert not (tmp_path / "variants").exists()  # the variants' databases are gone
    lines = "\n".join(comparison_lines(after))
    assert "all fixes off (before)" in lines and "without busy_timeout" in lines
    assert "improvement: 100% eliminated" in lines


def test_figures_of_a_run(tmp_path: Path) -> None:
    result = run_scenario(TINY, FAST, run_dir=tmp_path, deadline=10.0, sample_interval=0.05)
    data = figures(result)
    assert data["jobs_completed"] == data["total_jobs"] == 30
    assert data["busy_errors"] == 0 and data["retries"] == 0 and data["throughput"] > 0
