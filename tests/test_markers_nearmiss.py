"""A misspelt quaero marker is a usage error naming the right one, not a warning and a 1 x 1 run."""

from __future__ import annotations

import pytest

from pytest_quaero.markers import near_miss


@pytest.mark.parametrize("name", ["quaero", "quaero_senario", "quaero_scenarios", "quearo_scenario",
                                  "Quaero_Scenario", "quaero_run"])
def test_near_misses_point_at_quaero_scenario(name: str) -> None:
    assert near_miss(name, set()) == "quaero_scenario"


@pytest.mark.parametrize("name", ["quaero_scenario", "slow", "scenario", "parametrize", "database"])
def test_other_names_are_left_to_pytest(name: str) -> None:
    assert near_miss(name, set()) is None


def test_a_marker_the_project_registered_is_its_own() -> None:
    assert near_miss("quaero_smoke", {"quaero_smoke"}) is None
    assert near_miss("quaero_smoke", set()) == "quaero_scenario"


def test_the_issues_example_fails_the_session_naming_the_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quaero(parents=3, children=10)
        def test_tree(quaero_run):
            quaero_run()

        def test_other():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: test_the_issues_example_fails_the_session_naming_the_marker.py::test_tree: unknown marker "
        "@pytest.mark.quaero; did you mean @pytest.mark.quaero_scenario?*",
    ])
    assert "passed" not in result.stdout.str()  # nothing ran: no 1 x 1 scenario, no quaero[custom] line
    assert "quaero[custom]" not in result.stdout.str()


def test_a_class_level_typo_is_found_too_and_registered_names_pass(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    quaero_smoke: the team's own marker\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.quaero_smoke
        def test_ours():
            pass

        @pytest.mark.quaero_scenaro("light")
        class TestQueue:
            def test_it(self):
                pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*TestQueue::test_it: unknown marker @pytest.mark.quaero_scenaro; "
                                 "did you mean @pytest.mark.quaero_scenario?*"])
    assert "quaero_smoke" not in result.stderr.str()
