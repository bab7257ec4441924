"""`pytest --help`, `--markers` and `--fixtures` in a project that has the plugin installed.

argparse %-formats every help string, so one bare ``%`` in any option's help crashes
``pytest --help`` for every project that installs the plugin; these run pytest in a
subprocess, exactly as a user would, and read the whole output.
"""

from __future__ import annotations

import pytest


def test_help_lists_every_quaero_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0, result.stderr.str()
    assert "Traceback (most recent call last)" not in result.stdout.str() + result.stderr.str()
    text = result.stdout.str()
    for option in ("--quaero-scenario", "--quaero-compare-fail", "--quaero-faults", "--quaero-report"):
        assert option in text, option
    # the examples with percentages survive formatting as written
    assert "throughput:10%" in text
    assert "kill-worker:after=25%" in text


def test_help_with_the_plugin_active(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nquaero_scenario = light\n")
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0, result.stderr.str()
    assert "Traceback (most recent call last)" not in result.stdout.str() + result.stderr.str()


def test_markers_lists_the_quaero_marker(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["@pytest.mark.quaero_scenario*"])


def test_fixtures_lists_the_quaero_fixtures(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures")
    assert result.ret == 0, result.stderr.str()
    for fixture in ("quaero_settings", "quaero_db", "quaero_queue", "quaero_store", "quaero_pool", "quaero_run"):
        assert fixture in result.stdout.str(), fixture
