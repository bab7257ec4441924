"""Proof of detection: every bug class in the gallery fails its criterion; its correct twin passes.

The default suite runs each case once each way. ``pytest -m slow`` runs the proof the
README quotes: each broken part must fail its criteria on every one of 3 runs, and
each correct part must pass every criterion 10 runs in a row, under the same load.
"""

from __future__ import annotations

import pytest
from gallery.cases import CASES, Case, failed_criteria, run_case

from pytest_quaero.core.criteria import CRITERIA

BROKEN_RUNS = 3
CORRECT_RUNS = 10

cases = pytest.mark.parametrize("case", CASES, ids=[case.key for case in CASES])


def test_the_gallery_makes_every_criterion_fail() -> None:
    covered = {criterion for case in CASES for criterion in case.criteria}
    assert covered == {criterion.key for criterion in CRITERIA}


@cases
def test_broken_part_fails_its_criterion(case: Case) -> None:
    result = run_case(case, broken=True)
    missing = set(case.criteria) - set(failed_criteria(result))
    assert not missing, f"{case.bug}: {sorted(missing)} passed; verdicts: {result.verdicts}"


@cases
def test_correct_part_passes_every_criterion(case: Case) -> None:
    result = run_case(case, broken=False)
    assert failed_criteria(result) == [], f"{case.key} (correct): {result.verdicts}"


@pytest.mark.slow
@cases
def test_broken_part_fails_its_criterion_every_time(case: Case) -> None:
    for run in range(1, BROKEN_RUNS + 1):
        result = run_case(case, broken=True)
        missing = set(case.criteria) - set(failed_criteria(result))
        assert not missing, f"{case.bug}, run {run}/{BROKEN_RUNS}: {sorted(missing)} passed"


@pytest.mark.slow
@cases
def test_correct_part_passes_ten_runs_in_a_row(case: Case) -> None:
    for run in range(1, CORRECT_RUNS + 1):
        result = run_case(case, broken=False)
        assert failed_criteria(result) == [], f"{case.key} (correct), run {run}/{CORRECT_RUNS}: {result.verdicts}"
