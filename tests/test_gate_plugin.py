"""The regression gate end to end, with pytester: baselines, regressions, disabled fixes, loads, faults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import baseline, contention, faults, fixes, gate  # noqa: F401

FAST = ("--quaero-job-time=1ms", "--quaero-stagger=50ms", "--quaero-poll-interval=20ms")
# the gate is under test here, not the stagger: a 2-core machine starting an embedded PostgreSQL for
# another xdist worker can delay a thread's start by half a second
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


def run_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE, "--quaero-scenario=light", *FAST, *RELAXED, *args)


def no_traceback(result: pytest.RunResult) -> None:
    everything = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in everything, everything


def doctor(path: Path, **changes: float) -> None:
    """Rewrite the stored baseline's figures (e.g. a baseline 100x faster than any real run)."""
    document = json.loads(path.read_text())
    for entry in document["results"]:
        entry.update(changes)
    path.write_text(json.dumps(document))


def test_save_then_compare_within_limits(pytester: pytest.Pytester) -> None:
    saved = run_pytest(pytester, "--quaero-save-baseline=base.json", "-v")
    saved.assert_outcomes(passed=11)
    saved.stdout.fnmatch_lines(["quaero[[]light[]]::regression PASSED*", "*saved as baseline light-5x20 on *"])
    document = json.loads((pytester.path / "base.json").read_text())
    assert [entry["extra"]["baseline"]["key"] for entry in document["results"]] == ["light-5x20"]

    # a generous limit (a shared machine's timing noise is far below 10x) passes
    compared = run_pytest(pytester, "--quaero-baseline=base.json", "--quaero-compare-fail=throughput:90%,retries:+1000")
    compared.assert_outcomes(passed=11)
    assert compared.ret == 0
    compared.stdout.fnmatch_lines(["*against baseline *base.json (light-5x20 on *", "*throughput *PASS"])


def test_a_regression_fails_the_regression_item_with_a_table(pytester: pytest.Pytester) -> None:
    run_pytest(pytester, "--quaero-save-baseline=base.json").assert_outcomes(passed=11)
    doctor(pytester.path / "base.json", execution_time=0.001)  # the baseline did 100 jobs in 1ms
    result = run_pytest(pytester, "--quaero-baseline=base.json", "--quaero-compare-fail=throughput:10%")
    result.assert_outcomes(passed=10, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*_ quaero[[]light[]]::regression _*",
        "quaero[[]light[]] Regression vs Baseline: measured throughput * vs 100000.0 jobs/s (-*%), "
        "required throughput:10%, counts per job exact",
        "metric*before*now*change*limit*status",
        "throughput*100000.0 jobs/s*>= 90000.0 jobs/s (-10%)*FAIL",
        "FAILED quaero[[]light[]]::regression - *",
    ])
    no_traceback(result)
    # a regression is a failed run like any other: its database and log are kept for sqlite3
    kept = [line.split(":", 1)[1].strip() for line in result.outlines if line.strip().startswith("database kept:")]
    assert kept and all(Path(path).is_file() for path in kept), result.outlines


def test_a_missing_baseline_is_recorded_with_a_warning(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-baseline=new.json", "--quaero-compare-fail=throughput:10%")
    result.assert_outcomes(passed=11, warnings=1)
    result.stdout.fnmatch_lines(["*BaselineWarning: quaero[[]light[]]: no baseline for light-5x20 on * this run is "
                                 "recorded as the baseline"])
    assert json.loads((pytester.path / "new.json").read_text())["results"][0]["scenario"] == "light"


def test_require_baseline_fails_without_one(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-baseline=none.json", "--quaero-require-baseline")
    result.assert_outcomes(passed=10, failed=1)
    result.stdout.fnmatch_lines(["*Regression vs Baseline: measured no baseline for light-5x20 on *"])
    # still recorded (it passed its criteria), so the next run has a baseline to compare with
    assert (pytester.path / "none.json").exists()
    again = run_pytest(pytester, "--quaero-baseline=none.json", "--quaero-require-baseline")
    again.assert_outcomes(passed=11)
    no_traceback(result)


def test_compare_fail_alone_uses_the_default_store(pytester: pytest.Pytester) -> None:
    run_pytest(pytester, "--quaero-compare-fail=throughput:90%").assert_outcomes(passed=11, warnings=1)
    assert (pytester.path / ".quaero" / "baseline.json").exists()


@pytest.mark.parametrize("args, fragments", [
    (["--quaero-compare-fail=speed:10%"], ["--quaero-compare-fail=speed:10%", "unknown metric 'speed'", "throughput"]),
    (["--quaero-compare-fail=throughput:10"], ["write a relative limit as N%"]),
    (["--quaero-disable=wal,fsync"], ["--quaero-disable=wal,fsync", "unknown fix 'fsync'", "busy_timeout, retries"]),
    (["--quaero-contention=vacuum"], ["--quaero-contention=vacuum", "unknown load 'vacuum'", "writer, reader, burst"]),
    (["--quaero-faults=kill-db"], ["--quaero-faults=kill-db", "unknown fault 'kill-db'", "kill-worker"]),
    (["--quaero-faults=kill-worker", "--quaero-workers=1"], ["needs at least 2 workers"]),
    (["--quaero-faults=kill-worker", "--quaero-shared-db=shared.db"],
     ["--quaero-shared-db=shared.db: cannot be combined with --quaero-faults"]),
])
def test_bad_gate_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], fragments: list[str]) -> None:
    result = run_pytest(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and all(fragment in errors[0] for fragment in fragments), result.errlines
    no_traceback(result)


def test_disabled_stagger_is_judged_against_what_ran(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-disable=stagger", "-v")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines([
        "quaero: scenarios light; 2 workers (thread), stagger 0s, *",
        "*Worker Staggering*0s ± 2s between worker starts*PASS",
        "quaero[[]light[]] ran with fixes disabled: stagger",
    ])


def test_disabled_fixes_fail_by_counted_busy_errors_not_a_crash(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-disable=all", "--quaero-visibility-timeout=300ms",
                        "--quaero-contention=writer:hold=30ms,every=60ms")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*quaero[[]light[]] SQLITE_BUSY Errors: measured *, required = 0*"])
    no_traceback(result)


def test_contention_is_reported(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-contention=writer:hold=20ms,every=100ms;reader:snapshot=5s")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines([
        "quaero[[]light[]] contention writer:hold=20ms,every=100ms;reader:snapshot=5s: WAL max * KiB, "
        "checkpoint(TRUNCATE) under load busy=1 *, after busy=0, final WAL 0 bytes",
        "  writer:hold=20ms,every=100ms: * rounds, 0 busy errors of its own",
    ])


def test_faults_add_a_fault_recovery_item(pytester: pytest.Pytester) -> None:
    spec = "kill-worker:after=20;kill-producer:parent=3,after=7;restart-pool:after=60"
    result = run_pytest(pytester, f"--quaero-faults={spec}", "--quaero-visibility-timeout=500ms", "-v")
    result.assert_outcomes(passed=11)
    result.stdout.fnmatch_lines([
        "quaero[[]light[]]::fault_recovery PASSED*",
        "*Fault Recovery*3/3 faults injected*100/100 jobs completed, 0 twice, 0 messages left*PASS",
        "quaero[[]light[]] faults kill-worker:after=20;kill-producer:parent=3,after=7;restart-pool:after=60:",
    ])


@pytest.mark.slow
def test_compare_fixes_prints_before_and_after(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-compare-fixes", "--quaero-visibility-timeout=300ms",
                        "--quaero-contention=writer:hold=30ms,every=60ms")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines([
        "quaero[[]light[]] before/after the lock fixes:",
        "*all fixes off (before)*sqlite_busy_errors*",
        "*without busy_timeout*",
        "*as configured (after) *0 *0 *0 *",
        "*busy errors before fixes: *, after: 0, improvement: 100% eliminated",
    ])


@pytest.mark.slow
def test_xdist_workers_saving_at_once_lose_nothing(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makeconftest(
        "from pytest_quaero.core.scenarios import Scenario\n\n"
        "def pytest_quaero_scenarios():\n"
        "    return [Scenario(f'tiny{n}', 2, 5, 60.0) for n in range(4)]\n"
    )
    result = pytester.runpytest_subprocess(
        *BASE, "-n", "2", "--quaero-scenario=tiny0,tiny1,tiny2,tiny3", *FAST, *RELAXED,
        "--quaero-save-baseline=shared.json", timeout=300,
    )
    result.assert_outcomes(passed=44)
    saved = json.loads((pytester.path / "shared.json").read_text())
    keys = sorted(e["extra"]["baseline"]["key"] for e in saved["results"])
    assert keys == [f"tiny{n}-2x5" for n in range(4)]
