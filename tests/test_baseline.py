"""Baselines: compare rules and their directions, machine keys, the store, concurrent saves, the CLI."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_quaero.core.baseline import BaselineStore, fingerprint
from pytest_quaero.core.comparison import BaselineError, compare, parse_rules, scenario_key
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.results_json import build_document, machine_info, write_atomic


def make_result(scenario: str = "light", *, jobs: int = 100, seconds: float = 1.0, p95: float = 0.01,
                retries: int = 0, busy: int = 0, parents: int = 5, children: int = 20) -> RunResult:
    """A result with exactly the figures a comparison reads (throughput = jobs / seconds)."""
    result = RunResult(scenario=scenario, parents=parents, children_per_parent=children, run_id="r",
                       settings={"workers": 2})
    result.execution_time = seconds
    result.jobs_completed = jobs
    result.processing_times = [p95] * 20
    result.latencies = [p95 * 2] * 20
    result.retry = {"save_job": {"operations": 100, "attempts": 100 + retries, "busy_events": busy,
                                 "retried_operations": 0, "successful_retries": 0, "exhausted": 0,
                                 "other_errors": 0, "fast_busy": 0, "busy_wait_seconds": 0.0, "codes": {}}}
    return result


# ---------------------------------------------------------------- rules


def test_rules_parse_relative_and_absolute_limits() -> None:
    rules = {r.metric.name: r for r in parse_rules(["throughput:10%,p95:25%", "retries:+50", "p95:+20ms"])}
    assert rules["throughput"].kind == "percent" and rules["throughput"].limit == 10
    assert rules["retries"].kind == "absolute" and rules["retries"].limit == 50
    # a later rule for the same metric wins; a duration is read in seconds
    assert rules["p95"].kind == "absolute" and rules["p95"].limit == pytest.approx(0.02)


@pytest.mark.parametrize("text, said", [
    ("foo:10%", "unknown metric 'foo'; allowed: throughput"),
    ("throughput", "expected METRIC:N% or METRIC:+N"),
    ("throughput:ten%", "is not a percentage"),
    ("retries:50", "write a relative limit as N%"),
    ("throughput:-5%", "a percentage must be >= 0"),
    ("p95:+fast", "is not a duration such as 50ms"),
    ("retries:+many", "is not a number"),
])
def test_bad_rules_name_the_option_and_what_is_allowed(text: str, said: str) -> None:
    with pytest.raises(BaselineError) as info:
        parse_rules(text)
    assert f"--quaero-compare-fail={text}" in str(info.value)
    assert said in str(info.value)


def test_throughput_is_worse_when_lower() -> None:
    rules = parse_rules("throughput:10%")
    before = make_result(jobs=100, seconds=1.0)  # 100 jobs/s
    assert compare(before, make_result(jobs=100, seconds=1.0 / 0.91), rules).regressed is False  # 91/s
    assert compare(before, make_result(jobs=100, seconds=1.0 / 0.89), rules).regressed is True  # 89/s
    assert compare(before, make_result(jobs=100, seconds=0.5), rules).regressed is False  # faster never fails


def test_time_and_retries_are_worse_when_higher() -> None:
    before = make_result(seconds=1.0, p95=0.010, retries=10)
    rules = parse_rules("execution_time:20%,p95:25%,retries:+50")
    ok = compare(before, make_result(seconds=1.19, p95=0.0124, retries=60), rules)
    assert not ok.regressed, ok.rows
    bad = compare(before, make_result(seconds=1.21, p95=0.0126, retries=61), rules)
    assert {row.metric for row in bad.regressions} == {"execution_time", "p95", "retries"}
    # and better is never a regression
    assert not compare(before, make_result(seconds=0.2, p95=0.001, retries=0), rules).regressed


def test_a_zero_baseline_fails_any_increase_under_a_percent_rule() -> None:
    rules = parse_rules("busy_errors:50%")
    assert compare(make_result(busy=0), make_result(busy=1), rules).regressed
    assert not compare(make_result(busy=0), make_result(busy=0), rules).regressed


def test_unruled_metrics_are_shown_but_never_fail() -> None:
    comparison = compare(make_result(seconds=1.0), make_result(seconds=100.0), [])
    assert not comparison.regressed
    assert {row.status for row in comparison.rows} == {"-"}


# ---------------------------------------------------------------- keys


def test_fingerprint_keeps_nothing_that_jitters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUAERO_BASELINE_MACHINE", raising=False)
    machine = machine_info()
    key = fingerprint()
    assert key == fingerprint(machine)
    assert machine["node"] not in key  # CI runners change host names every run
    changed = dict(machine, node="other-host", release="9.9.9", python_version=machine["python_version"] + "9")
    assert fingerprint(changed) == key  # host, kernel and python patch level do not split baselines
    assert fingerprint(dict(machine, cpu_count=(machine["cpu_count"] or 1) + 1)) != key


def test_fingerprint_can_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAERO_BASELINE_MACHINE", "ci-large")
    assert fingerprint() == "ci-large"


def test_scenario_key_includes_the_shape() -> None:
    assert scenario_key(make_result("custom", parents=3, children=7)) == "custom-3x7"


# ---------------------------------------------------------------- the store


def test_store_keeps_other_scenarios_and_machines(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "b.json")
    store.save(make_result("light", seconds=1.0), "machine-a")
    store.save(make_result("medium", parents=10, children=50, seconds=2.0), "machine-a")
    store.save(make_result("light", seconds=3.0), "machine-b")
    store.save(make_result("light", seconds=4.0), "machine-a")  # replaces the first light on machine-a
    found = store.find("light-5x20", "machine-a")
    assert found is not None and found.result.execution_time == 4.0
    assert store.find("light-5x20", "machine-b").result.execution_time == 3.0  # type: ignore[union-attr]
    assert store.find("medium-10x50", "machine-a") is not None
    assert store.find("light-5x20", "machine-c") is None
    assert sorted(store.machines("light-5x20")) == ["machine-a", "machine-b"]
    document = json.loads((tmp_path / "b.json").read_text())
    assert len(document["results"]) == 3 and document["schema_version"] == 1


def test_a_plain_results_document_serves_as_a_baseline(tmp_path: Path) -> None:
    path = write_atomic(tmp_path / "run.json", build_document([make_result("light")]))
    found = BaselineStore(path).find("light-5x20", fingerprint(machine_info()))
    assert found is not None


def test_an_unreadable_store_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("{ not json")
    with pytest.raises(BaselineError, match="not JSON"):
        BaselineStore(path).save(make_result(), "m")
    assert path.read_text() == "{ not json"


def _save_many(path: str, worker: int, count: int) -> None:
    store = BaselineStore(path)
    for n in range(count):
        store.save(make_result(f"w{worker}-s{n}"), "machine")


def test_concurrent_saves_from_processes_lose_nothing(tmp_path: Path) -> None:
    # Like xdist workers saving at the same moment: every save is a read-merge-write,
    # so without the lock some saves would overwrite others' entries.
    path = str(tmp_path / "b.json")
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_save_many, args=(path, w, 6)) for w in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    document = json.loads(Path(path).read_text())
    keys = sorted(entry["extra"]["baseline"]["key"] for entry in document["results"])
    assert keys == sorted(f"w{w}-s{n}-5x20" for w in range(4) for n in range(6))


# ---------------------------------------------------------------- python -m pytest_quaero compare


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_quaero", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def documents(tmp_path: Path) -> tuple[Path, Path]:
    old = write_atomic(tmp_path / "old.json", build_document([make_result("light", seconds=1.0)]))
    new = write_atomic(tmp_path / "new.json", build_document([make_result("light", seconds=1.5)]))
    return old, new


def test_cli_exits_1_on_a_regression_with_a_table(documents: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = documents
    done = _cli("compare", str(old), str(new), "--fail=throughput:10%", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "light-5x20: REGRESSION" in done.stdout
    assert any(line.split()[:1] == ["throughput"] and line.rstrip().endswith("FAIL")
               for line in done.stdout.splitlines())


def test_cli_exits_0_within_limits(documents: tuple[Path, Path], tmp_path: Path) -> None:
    old, new = documents
    done = _cli("compare", str(new), str(old), "--fail=throughput:10%,execution_time:20%", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "light-5x20: ok" in done.stdout


@pytest.mark.parametrize("args, said", [
    (("compare", "old.json", "missing.json"), "missing.json: no such file"),
    (("compare", "old.json", "new.json", "--fail=speed:10%"), "unknown metric 'speed'"),
    (("compare", "old.json"), "the following arguments are required"),
    ((), "usage:"),
])
def test_cli_usage_errors_exit_2_without_a_traceback(documents: tuple[Path, Path], tmp_path: Path,
                                                     args: tuple[str, ...], said: str) -> None:
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert said in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_missing_baseline_fails_only_when_required(tmp_path: Path) -> None:
    old = write_atomic(tmp_path / "old.json", build_document([make_result("medium", parents=10, children=50)]))
    new = write_atomic(tmp_path / "new.json", build_document([make_result("light")]))
    assert _cli("compare", str(old), str(new), cwd=tmp_path).returncode == 0
    required = _cli("compare", str(old), str(new), "--require-baseline", cwd=tmp_path)
    assert required.returncode == 1 and "no baseline" in required.stdout
