"""JUnit XML: one naming scheme (``quaero_<scenario>_<metric>``), and run metrics in a stable place.

A scenario's metrics are properties of the test suite, whichever criterion item ran the load
(``-k`` may leave any of them first); a ``quaero_run()`` result's are properties of the test
that called it. Read from the file ``--junitxml`` wrote, next to the ``--quaero-json`` figures.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

FAST = ("--quaero-job-time=1ms", "--quaero-stagger=50ms", "--quaero-poll-interval=20ms")
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1",
           "--quaero-threshold=max_lock_hold_p95=1s", "--quaero-threshold=max_lock_hold=5s")

_TEST = """
import pytest

@pytest.mark.quaero_scenario(parents=1, children=4, workers=1)
def test_my_queue(quaero_run):
    result = quaero_run()
    assert result.total_jobs == 4
"""


def _run(pytester: pytest.Pytester, *args: str) -> tuple[ET.Element, dict[str, dict[str, float]]]:
    pytester.makepyfile(test_mine=_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--quaero-scenario=light", *FAST, *RELAXED,
                                "--junitxml=junit.xml", "--quaero-json=quaero.json", *args)
    # a criterion a busy machine fails still leaves every figure in the file: that is what is read here
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()
    document = json.loads((pytester.path / "quaero.json").read_text())
    metrics = {entry["scenario"]: {**entry["metrics"], "status": "PASS" if entry["passed"] else "FAIL"}
               for entry in document["results"]}
    return ET.parse(pytester.path / "junit.xml").getroot(), metrics


def _suite_properties(root: ET.Element) -> dict[str, str]:
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    block = suite.find("properties")
    return {} if block is None else {p.get("name", ""): p.get("value", "") for p in block.iter("property")}


def _case_properties(root: ET.Element) -> dict[str, dict[str, str]]:
    return {f"{case.get('classname')}::{case.get('name')}": {p.get("name", ""): p.get("value", "")
                                                              for p in case.iter("property")}
            for case in root.iter("testcase")}


def _check(root: ET.Element, metrics: dict[str, dict[str, float]]) -> None:
    suite = _suite_properties(root)
    light = {name: value for name, value in suite.items() if name.startswith("quaero_light_")}
    for name, value in metrics["light"].items():  # every figure of the JSON, and the verdict ("status")
        assert light["quaero_light_" + name.replace(".", "_")] == str(value), name
    assert len(light) == len(metrics["light"])
    assert not any(name.startswith("quaero_custom_") for name in suite)  # the marker run is its test's

    cases = _case_properties(root)
    for nodeid, properties in cases.items():
        names = set(properties)
        assert all("." not in name for name in names), (nodeid, names)  # one scheme: underscores only
        if "quaero[light]" in nodeid:
            # the criterion items keep their verdict, and none of them carries the run's figures
            assert {"quaero_scenario", "quaero_measured", "quaero_required", "quaero_status"} <= names
            assert not any(name.startswith("quaero_light_") for name in names), nodeid
    mine = next(properties for nodeid, properties in cases.items() if nodeid.endswith("test_my_queue"))
    assert mine["quaero_custom_total_jobs"] == "4" and mine["quaero_custom_status"] == metrics["custom"]["status"]
    assert mine["quaero_custom_throughput"] == str(metrics["custom"]["throughput"])


def test_run_metrics_are_suite_properties_and_a_quaero_run_result_is_its_tests(pytester: pytest.Pytester) -> None:
    root, metrics = _run(pytester)
    _check(root, metrics)


def test_the_place_does_not_depend_on_which_item_ran_first(pytester: pytest.Pytester) -> None:
    # -k leaves the busy-error criterion first: before, the figures moved onto it
    root, metrics = _run(pytester, "-k", "busy or my_queue")
    assert not any("execution_time" in nodeid for nodeid in _case_properties(root))
    _check(root, metrics)


@pytest.mark.slow
def test_under_xdist_the_controller_writes_them(pytester: pytest.Pytester) -> None:
    root, metrics = _run(pytester, "-n", "2")
    _check(root, metrics)
