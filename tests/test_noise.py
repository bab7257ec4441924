"""Noise-aware time comparisons: each run measures its own noise; rules tighter than it are warned about."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from test_baseline import make_result

from pytest_quaero.core.comparison import compare, parse_rules
from pytest_quaero.core.noise import band, measure
from pytest_quaero.core.results_json import build_document, write_atomic


def test_a_steady_run_measures_little_noise_and_a_jittery_one_more() -> None:
    steady = [i * 0.01 for i in range(200)]
    draw = random.Random(1)
    jittery, now = [], 0.0
    for _ in range(200):
        now += draw.choice([0.001, 0.03])  # bursts and stalls
        jittery.append(now)
    quiet, loud = measure(steady, [0.01] * 200, [0.02] * 200), measure(jittery, steady, steady)
    assert quiet["throughput"] == pytest.approx(0.0, abs=1e-6)
    assert loud["throughput"] > 1.0
    assert quiet["p95"] == 0.0 and loud["p95"] > 0.0
    assert measure([0.1, 0.2], [], []) == {}  # too few jobs to say anything: nothing claimed


def test_the_band_combines_both_runs() -> None:
    assert band(3.0, 4.0) == 10.0  # 2 x hypot
    assert band(None, 4.0) is None


def _with_noise(seconds: float, throughput_noise: float) -> object:
    result = make_result(seconds=seconds)
    result.extra["noise"] = {"throughput": throughput_noise, "execution_time": throughput_noise}
    return result


def test_a_change_inside_the_noise_passes_and_the_tight_rule_is_warned_about() -> None:
    before, now = _with_noise(1.0, 5.0), _with_noise(1.1, 5.0)  # 9% slower, noise band 14.1%
    comparison = compare(before, now, parse_rules("throughput:2%"))
    row = next(row for row in comparison.rows if row.metric == "throughput")
    assert row.passed is True and row.noise == "±14.1%"
    assert comparison.warnings and "throughput:2% is tighter than the noise" in comparison.warnings[0]


def test_a_change_beyond_the_noise_and_the_rule_fails() -> None:
    before, now = _with_noise(1.0, 2.0), _with_noise(1.5, 2.0)  # 33% slower, band 5.7%
    comparison = compare(before, now, parse_rules("throughput:10%"))
    assert comparison.regressed and not comparison.warnings


def test_without_noise_figures_the_rule_alone_decides() -> None:
    comparison = compare(make_result(seconds=1.0), make_result(seconds=1.1), parse_rules("throughput:2%"))
    assert comparison.regressed and not comparison.warnings


def test_the_cli_prints_the_noise_and_warns_on_stderr(tmp_path: Path) -> None:
    old = write_atomic(tmp_path / "old.json", build_document([_with_noise(1.0, 5.0)]))
    new = write_atomic(tmp_path / "new.json", build_document([_with_noise(1.05, 5.0)]))
    command = [sys.executable, "-m", "pytest_quaero", "compare", str(old), str(new), "--fail=throughput:1%"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "noise" in done.stdout.splitlines()[1] and "±14.1%" in done.stdout
    assert "warning: light-5x20: throughput:1% is tighter than the noise" in done.stderr


def test_a_real_run_carries_its_noise(tmp_path: Path) -> None:
    from gallery.cases import BASE, TINY

    from pytest_quaero.core.run import run_scenario

    result = run_scenario(TINY, BASE, run_dir=tmp_path)
    assert set(result.extra["noise"]) >= {"throughput", "execution_time", "p95", "avg_processing_time"}
    assert all(value >= 0 for value in result.extra["noise"].values())
