"""The user-level lock gallery: each broken conftest fails its criteria under the default settings.

Every variant in :mod:`lock_gallery.variants` is a ``conftest.py`` a team could ship,
plugged in through the public hooks and run as ``pytest --quaero-scenario=light`` (or
``stress``) with nothing loosened: the template's defaults must catch it. The default
suite runs each broken variant once and the built-in queue once per scenario; ``-m slow``
runs each broken variant three times in a row (every run must catch it) and the twins.
"""

from __future__ import annotations

import ast
import os

import pytest
from lock_gallery.variants import BROKEN, CORRECT, Variant, item_outcomes, run_args

import pytest_quaero

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import extension, items, plugin  # noqa: F401
from pytest_quaero.core import criteria, harness, pool, protocols, run  # noqa: F401
from pytest_quaero.core.criteria import CRITERIA

KEYS = [criterion.key for criterion in CRITERIA]
HOOKS = {"pytest_quaero_make_queue", "pytest_quaero_make_store", "pytest_quaero_handle_job"}
RUNS_IN_A_ROW = 3

broken = pytest.mark.parametrize("variant", BROKEN, ids=[variant.key for variant in BROKEN])


@pytest.fixture(autouse=True)
def _template_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # The point is that the defaults catch each bug: no QUAERO_* setting may leak in from outside.
    for name in list(os.environ):
        if name.startswith("QUAERO_"):
            monkeypatch.delenv(name)


def run_variant(pytester: pytest.Pytester, variant: Variant) -> tuple[pytest.RunResult, dict[str, tuple[str, str]]]:
    pytester.makeconftest(variant.conftest)
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(*run_args(variant, junit))
    outcomes = item_outcomes(junit)
    prefix = f"quaero[{variant.scenario}]::"
    # one judged item per criterion, or the run never got as far as its criteria (a contract error)
    assert sorted(outcomes) == sorted(prefix + key for key in KEYS), result.stdout.str()[-3000:]
    return result, {name.removeprefix(prefix): outcome for name, outcome in outcomes.items()}


def assert_caught(variant: Variant, result: pytest.RunResult, outcomes: dict[str, tuple[str, str]],
                  label: str = "") -> None:
    escaped = [key for key in variant.expected if outcomes[key][0] != "failed"]
    failed = {key: message for key, (outcome, message) in outcomes.items() if outcome != "passed"}
    assert not escaped, (f"{variant.key} ({variant.name}){label}: {escaped} passed; failed instead: {failed}\n"
                         + result.stdout.str()[-4000:])
    for key in variant.expected:
        # judged on a finished run (``measured X, required Y``), not failed by an error before it
        assert "measured " in outcomes[key][1] and ", required " in outcomes[key][1], outcomes[key]
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def assert_all_passed(variant: Variant, result: pytest.RunResult, outcomes: dict[str, tuple[str, str]],
                      label: str = "") -> None:
    failed = {key: message for key, (outcome, message) in outcomes.items() if outcome != "passed"}
    assert not failed, f"{variant.key} ({variant.name}){label}: {failed}\n" + result.stdout.str()[-4000:]
    assert result.ret == pytest.ExitCode.OK


# ---------------------------------------------------------------- the table itself (no run)


def test_every_variant_is_a_users_conftest_through_the_public_api() -> None:
    for variant in (*BROKEN, *CORRECT):
        tree = ast.parse(variant.conftest, filename=f"variant {variant.key}")
        hooks = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
                 and node.name.startswith("pytest_quaero_")}
        assert hooks <= HOOKS, (variant.key, hooks - HOOKS)
        assert bool(hooks) != variant.builtin, (variant.key, hooks)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_quaero"):
                assert node.module == "pytest_quaero", (variant.key, node.module)
                assert {alias.name for alias in node.names} <= set(pytest_quaero.__all__), variant.key
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("pytest_quaero.") for alias in node.names), variant.key
        assert set(variant.expected) <= set(KEYS), variant.key
        assert variant.scenario in ("light", "stress"), variant.key
        # the defaults must catch it: nothing but the worker mode may be set
        assert all(arg.startswith("--quaero-worker-mode=") for arg in variant.args), variant.args


def test_the_gallery_covers_every_class() -> None:
    assert [variant.key for variant in BROKEN] == ["1", "2", "3", "4", "5", "6", "7a", "7b", "7c"]
    assert {key for variant in BROKEN for key in variant.expected} == {
        "queue_deletion", "hierarchy_integrity", "write_lock_hold", "completion_rate", "sqlite_busy_errors",
        "no_duplicate_processing"}


# ---------------------------------------------------------------- one run each (default suite)


@broken
def test_broken_variant_fails_its_criteria(pytester: pytest.Pytester, variant: Variant) -> None:
    assert_caught(variant, *run_variant(pytester, variant))


@pytest.mark.parametrize("variant", [v for v in CORRECT if v.builtin], ids=lambda v: v.key)
def test_the_builtin_queue_passes_every_criterion(pytester: pytest.Pytester, variant: Variant) -> None:
    assert_all_passed(variant, *run_variant(pytester, variant))


# ---------------------------------------------------------------- every run catches it (pytest -m slow)


@pytest.mark.slow
@broken
def test_broken_variant_is_caught_three_runs_in_a_row(pytester: pytest.Pytester, variant: Variant) -> None:
    for number in range(1, RUNS_IN_A_ROW + 1):
        assert_caught(variant, *run_variant(pytester, variant), label=f", run {number}/{RUNS_IN_A_ROW}")


@pytest.mark.slow
@pytest.mark.parametrize("variant", CORRECT, ids=lambda v: v.key)
def test_correct_twin_passes_three_runs_in_a_row(pytester: pytest.Pytester, variant: Variant) -> None:
    for number in range(1, RUNS_IN_A_ROW + 1):
        assert_all_passed(variant, *run_variant(pytester, variant), label=f", run {number}/{RUNS_IN_A_ROW}")
