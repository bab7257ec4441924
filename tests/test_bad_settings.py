"""Issue 12, bad values: each is refused once, where it is read, with one sentence naming its source.

Every value (command line, environment, TOML, ini, marker, hook) reads through the field
parsers of ``core.fields``: finite, in the range SQLite and the OS can hold, ASCII digits,
no spaces inside a number. Cross-checks against the chosen scenarios (the stagger that
never reaches its last worker, a fault that cannot happen) are usage errors before any run.
"""

# ruff: noqa: RUF001 - look-alike digits and letters are what these tests feed in

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pytest_quaero import markers, plugin  # noqa: F401 - imported once, before pytester's in-process runs
from pytest_quaero.core.criteria import Verdict, evaluate, thresholds_for
from pytest_quaero.core.fault_spec import FaultError, check_faults, parse_faults
from pytest_quaero.core.fields import SettingsError, parse_duration
from pytest_quaero.core.metrics import RunResult, WorkerRecord
from pytest_quaero.core.scenarios import BUILTIN, Scenario, check_stagger
from pytest_quaero.core.settings import Settings, resolve
from tests.test_plugin import BASE, assert_usage_error, run_pytest

LIGHT = BUILTIN["light"]


def toml(tmp_path: Path, text: str, name: str = "quaero.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- finite values, every source


@pytest.mark.parametrize(("line", "option"), [
    ("stagger = nan", "--quaero-stagger"),
    ("stagger = inf", "--quaero-stagger"),
    ("stagger = -inf", "--quaero-stagger"),
    ("job_time = nan", "--quaero-job-time"),
    ("visibility_timeout = inf", "--quaero-visibility-timeout"),
    ("poll_interval = 1e400", "--quaero-poll-interval"),
])
def test_toml_infinities_and_nan_are_refused(tmp_path: Path, line: str, option: str) -> None:
    section = "load_test" if line.startswith("job_time") else "queue"
    config = toml(tmp_path, f"[{section}]\n{line}\n")
    with pytest.raises(SettingsError) as info:
        resolve({}, {}, {}, config_file=config)
    key, _, value = line.partition(" = ")
    shown = {"1e400": "inf"}.get(value, value)
    assert str(info.value).startswith(f"{key} = {shown} in [{section}] of {config}: invalid value for {option}; ")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 10**400])
def test_marker_numbers_are_finite(value: object) -> None:
    with pytest.raises(SettingsError, match=r"^stagger=.* \(marker\): invalid value for --quaero-stagger; allowed"):
        Settings().replace(source="marker", stagger=value)


@pytest.mark.parametrize(("key", "value"), [
    ("min_throughput", "nan"), ("min_throughput", "inf"), ("min_throughput", "1e3"), ("min_throughput", "-1"),
    ("min_completion_rate", "50%%%"), ("min_completion_rate", "nan%"), ("max_busy_errors", "٣"),
    ("max_duplicates", "１"), ("max_execution_time", "0"), ("max_execution_time", "100000000h"),
    ("stagger_tolerance", "1 0 0 m s"),
])
def test_threshold_values_are_finite_ascii_numbers(key: str, value: str) -> None:
    settings = resolve({}, {}, {}, threshold_cli=[f"{key}={value}"])
    with pytest.raises(SettingsError) as info:
        thresholds_for(LIGHT, settings.thresholds, settings.threshold_sources)
    assert str(info.value).startswith(f"threshold {key} = {value!r} (--quaero-threshold (command line)): "
                                      "invalid value; allowed: ")


def test_thresholds_still_read_their_units() -> None:
    settings = resolve({}, {}, {}, threshold_cli=["min_throughput=12.5/s", "min_completion_rate=90%",
                                                  "max_execution_time=2h", "max_busy_errors=3"])
    limits = thresholds_for(LIGHT, settings.thresholds)
    assert (limits.min_throughput, limits.min_completion_rate) == (12.5, 90.0)
    assert (limits.max_execution_time, limits.max_busy_errors) == (7200.0, 3)


def test_a_nan_threshold_is_a_usage_error(pytester: pytest.Pytester) -> None:
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=light", "--quaero-threshold=min_throughput=nan"),
                       "threshold min_throughput = 'nan' (--quaero-threshold (command line))",
                       "allowed: jobs per second")


# ---------------------------------------------------------------- what SQLite and the OS can hold


@pytest.mark.parametrize(("cli", "option", "allowed"), [
    ({"busy_timeout_ms": str(2**31)}, "--quaero-busy-timeout", "at most 2147483647ms (SQLite's limit"),
    ({"busy_timeout_ms": "600h"}, "--quaero-busy-timeout", "at most 2147483647ms"),
    ({"cache_size_mb": "99999999999"}, "--quaero-cache-size", "at most 2097152, SQLite's limit"),
    ({"visibility_timeout": "100000000h"}, "--quaero-visibility-timeout", "at most 8760h"),
    ({"stagger": "9999999h"}, "--quaero-stagger", "at most 8760h"),
    ({"job_time": "1ms..9000h"}, "--quaero-job-time", "at most 8760h"),
    ({"max_receive": str(2**63)}, "--quaero-max-receive", "fits in 64 bits"),
    ({"seed": "9" * 5000}, "--quaero-seed", "fits in 64 bits"),
    ({"workers": "100000"}, "--quaero-workers", "at most 10000"),
])
def test_values_past_what_sqlite_or_the_os_holds(cli: dict[str, str], option: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as info:
        resolve(cli, {}, {})
    message = str(info.value)
    assert f"(command line): invalid value for {option}; allowed: " in message and allowed in message
    assert len(message) < 400  # a 5000-digit value is cut short, not echoed


def test_the_largest_values_that_fit_are_accepted() -> None:
    s = resolve({"busy_timeout_ms": str(2**31 - 1), "cache_size_mb": "2097152", "visibility_timeout": "8760h",
                 "max_receive": str(2**63 - 1), "workers": "10000"}, {}, {})
    assert (s.busy_timeout_ms, s.cache_size_mb, s.visibility_timeout) == (2**31 - 1, 2097152, 8760 * 3600.0)


@pytest.mark.parametrize(("cli", "option", "char"), [
    ({"stagger": "５00ms"}, "--quaero-stagger", "'５'"),
    ({"stagger": "٥٠٠ms"}, "--quaero-stagger", "'٥'"),
    ({"workers": "４"}, "--quaero-workers", "'４'"),
    ({"busy_timeout_ms": "１0000"}, "--quaero-busy-timeout", "'１'"),
    ({"synchronous": "oﬀ"}, "--quaero-synchronous", "'ﬀ'"),  # 'oﬀ'.upper() == 'OFF'
])
def test_non_ascii_digits_are_refused_and_named(cli: dict[str, str], option: str, char: str) -> None:
    with pytest.raises(SettingsError) as info:
        resolve(cli, {}, {})
    assert f"invalid value for {option}" in str(info.value)
    assert f"({char} is not ASCII: write digits, units and words in ASCII)." in str(info.value)


@pytest.mark.parametrize("text", [" 1 0 0 m s ", "1 00ms", "100 ms", "1m 30s", "1_000ms", "1e3ms", "٥s"])
def test_durations_have_no_spaces_inside_and_ascii_digits(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
    with pytest.raises(SettingsError):
        resolve({}, {"QUAERO_QUEUE_STAGGER": text}, {})


def test_a_value_with_a_newline_stays_one_line() -> None:
    with pytest.raises(SettingsError) as info:
        resolve({}, {"QUAERO_QUEUE_CONCURRENCY": "2\n--quaero-workers=3"}, {})
    assert "\n" not in str(info.value) and "2\\n--quaero-workers=3" in str(info.value)


def test_a_value_from_the_environment_with_undecodable_bytes() -> None:
    with pytest.raises(SettingsError, match=r"QUAERO_QUEUE_NAME=.*invalid value for --quaero-queue-name"):
        resolve({}, {"QUAERO_QUEUE_NAME": "jobs\udcff"}, {})


# ---------------------------------------------------------------- the config file itself


def test_a_fifo_as_config_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "quaero.toml"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            resolve({}, {}, {}, config_file=str(fifo))
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # the old code blocks in open(): give it a writer so the thread can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
        pytest.fail("--quaero-config on a FIFO waited for a writer")
    assert isinstance(outcome[0], SettingsError)
    assert str(outcome[0]) == (f"--quaero-config={fifo}: cannot be read (it is a FIFO, not a regular file); "
                               "give the path of a TOML file.")


def test_a_device_as_config_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"^--quaero-config=/dev/null: cannot be read \(it is a special file"):
        resolve({}, {}, {}, config_file="/dev/null")


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b=" * 3000 + "1" + "}" * 3000])
def test_a_deeply_nested_config_is_one_error(tmp_path: Path, text: str) -> None:
    config = toml(tmp_path, text)
    with pytest.raises(SettingsError, match=r"not valid TOML for Quaero \(arrays or inline tables nested too deeply"):
        resolve({}, {}, {}, config_file=config)


def test_deeply_nested_threshold_tables_are_one_error(tmp_path: Path) -> None:
    config = toml(tmp_path, "[thresholds.light" + ".x" * 3000 + "]\nmin_throughput = 1\n")
    with pytest.raises(SettingsError, match=r"\[thresholds.light\] x: a threshold is one value"):
        resolve({}, {}, {}, config_file=config)


def test_a_config_that_is_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "quaero.toml"
    config.write_bytes(b"[queue]\nqueue_name = \"caf\xe9\"\n")
    with pytest.raises(SettingsError, match=r"not valid TOML \(not UTF-8 text: invalid continuation byte at byte"):
        resolve({}, {}, {}, config_file=str(config))


def test_a_config_path_with_braces(tmp_path: Path) -> None:
    config = toml(tmp_path, "[queue]\nconcurrency = -2\n", name="{team}.toml")
    with pytest.raises(SettingsError, match=r"^concurrency = -2 in \[queue\] of .*\{team\}\.toml: invalid value"):
        resolve({}, {}, {}, config_file=config)


def test_a_fifo_config_is_a_usage_error(pytester: pytest.Pytester) -> None:
    os.mkfifo(pytester.path / "fifo.toml")
    # a subprocess with a timeout: the old code waited for a writer forever
    result = pytester.runpytest_subprocess(*BASE, "--quaero-config=fifo.toml", timeout=60)
    assert_usage_error(result, "--quaero-config=fifo.toml: cannot be read (it is a FIFO, not a regular file)")


# ---------------------------------------------------------------- the stagger


def test_a_stagger_past_the_time_limit_is_refused() -> None:
    settings = resolve({"stagger": "1000h"}, {}, {})
    with pytest.raises(SettingsError) as info:
        check_stagger(settings, LIGHT)
    assert str(info.value) == (
        "--quaero-stagger=1000h (command line) with --quaero-workers=2 (default): the last worker would start "
        "1000h after the pool, but scenario 'light' stops after 5m; allowed: stagger x (workers - 1) below the "
        "time limit, here a stagger under 5m.")
    check_stagger(resolve({"stagger": "1m", "workers": "5"}, {}, {}), LIGHT)  # the 5th starts at 4m: fine
    check_stagger(resolve({"stagger": "1000h", "workers": "1"}, {}, {}), LIGHT)  # nothing to stagger


def test_a_stagger_past_the_time_limit_is_a_usage_error(pytester: pytest.Pytester) -> None:
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=light", "--quaero-stagger=1000h"),
                       "--quaero-stagger=1000h (command line) with --quaero-workers=2 (default)",
                       "scenario 'light' stops after 5m")


def test_the_stagger_check_uses_the_time_limit_the_run_gets(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nquaero_stagger = 2m\n")
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=light", "--quaero-threshold=max_execution_time=90s"),
                       "--quaero-stagger=2m (quaero_stagger (tox.ini))", "scenario 'light' stops after 90s")


def _run(started: list[float | None], stagger: float = 3600.0, execution_time: float = 0.2) -> RunResult:
    workers = [WorkerRecord(index=i, name=f"JobWorker-{i + 1}", start_offset=offset)
               for i, offset in enumerate(started)]
    return RunResult("light", 5, 20, "r1", settings={"stagger": stagger, "workers": len(started)},
                     execution_time=execution_time, workers=workers,
                     timeline=[{"phase": "pool_started", "label": "", "offset": 0.0}])


def _staggering(result: RunResult) -> Verdict:
    return next(v for v in evaluate(result, thresholds_for(LIGHT, {})) if v.criterion == "worker_staggering")


def test_a_stagger_never_exercised_does_not_pass() -> None:
    verdict = _staggering(_run([0.001, None]))
    assert not verdict.passed
    assert verdict.measured == "not exercised: 1 of 2 workers started"
    assert verdict.detail.startswith("the run ended before JobWorker-2 was due (1h after the pool")
    # one worker has nothing to stagger against: nothing can regress there, so it is not a failure
    one = _staggering(_run([0.001]))
    assert one.passed and one.measured == "not applicable: 1 worker"
    assert _staggering(_run([0.0, 0.5], stagger=0.5)).passed


# ---------------------------------------------------------------- faults that cannot happen


def test_a_fault_that_cannot_happen_names_the_scenario() -> None:
    tiny = Scenario("tiny", 2, 5, 60.0)
    for spec, said in [
        ("kill-producer:parent=99", "cannot happen in scenario 'light': it has 5 parents; allowed: parent=1..5"),
        ("kill-producer:parent=2,after=20", "a parent has 20 children, so after=20 is never reached"),
        ("kill-worker:after=100", "it has 100 jobs, so after=100 is never reached"),
        ("restart-pool:at=5m", "it stops after 5m, so at=5m is never reached"),
    ]:
        with pytest.raises(FaultError) as info:
            check_faults(parse_faults(spec), Settings(), scenarios=[LIGHT])
        assert str(info.value).startswith(f"--quaero-faults: {spec!r} ") and said in str(info.value)
    with pytest.raises(FaultError, match="cannot happen in scenario 'tiny': it has 2 parents"):
        check_faults(parse_faults("kill-producer:parent=3"), Settings(), scenarios=[LIGHT, tiny])
    check_faults(parse_faults("kill-producer:parent=5,after=19;restart-pool:after=99"), Settings(), scenarios=[LIGHT])


@pytest.mark.parametrize("spec", ["kill-worker:after=2.5", "kill-producer:parent=٢", "kill-worker:after=５%",
                                  "restart-pool:at=1 0s", "kill-worker:hold=100000000h"])
def test_fault_numbers_are_ascii_whole_and_bounded(spec: str) -> None:
    with pytest.raises(FaultError, match="invalid"):
        parse_faults(spec)


def test_a_fault_that_cannot_happen_is_a_usage_error(pytester: pytest.Pytester) -> None:
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=light", "--quaero-faults=kill-producer:parent=99"),
                       "--quaero-faults: 'kill-producer:parent=99' cannot happen in scenario 'light'",
                       "it has 5 parents; allowed: parent=1..5")


# ---------------------------------------------------------------- options that do not go together


def test_audit_and_scenario_together_are_a_usage_error(pytester: pytest.Pytester) -> None:
    assert_usage_error(run_pytest(pytester, "--quaero-audit=old.db", "--quaero-scenario=light"),
                       "--quaero-audit=old.db cannot be combined with --quaero-scenario=light",
                       "run them separately")


# ---------------------------------------------------------------- markers and hooks


@pytest.mark.parametrize(("marker", "fragments"), [
    ("quaero_scenario('light', stagger=float('nan'))",
     ("stagger=nan (@pytest.mark.quaero_scenario on test_m.py::test_a)", "invalid value for --quaero-stagger")),
    ("quaero_scenario('light', time_limit='abc')",
     ("@pytest.mark.quaero_scenario on test_m.py::test_a: invalid time_limit='abc'; allowed: a duration such as",)),
    ("quaero_scenario(parents=2.5, children=3)",
     ("test_m.py::test_a: invalid parents=2.5; allowed: a whole number >= 1",)),
    ("quaero_scenario('light', time_limit=float('inf'))", ("invalid time_limit=inf",)),
    ("quaero_scenario('light', stagger='10m')",
     ("--quaero-stagger=10m (@pytest.mark.quaero_scenario on test_m.py::test_a)", "stops after 5m")),
])
def test_bad_marker_values_name_the_marker_and_key(pytester: pytest.Pytester, marker: str,
                                                  fragments: tuple[str, ...]) -> None:
    pytester.makepyfile(test_m=f"import pytest\n\n@pytest.mark.{marker}\ndef test_a():\n    pass\n")
    assert_usage_error(run_pytest(pytester), *fragments)


@pytest.mark.parametrize(("body", "fragments"), [
    ('return [Scenario("tiny", parents=2.5, children=5)]',
     ("raised ValueError: scenario 'tiny': parents=2.5; allowed: a whole number >= 1",)),
    ('return [Scenario("tiny", 2, 5, time_limit="5m")]',
     ("raised ValueError: scenario 'tiny': time_limit='5m'; allowed: seconds as a number > 0",)),
    ('return [Scenario("tiny", 2, 5, time_limit=float("nan"))]', ("time_limit=nan",)),
    ("return 1 / 0", ("raised ZeroDivisionError: division by zero",)),
    ('raise RuntimeError("no config\\nfound")', ("raised RuntimeError: no config found",)),
])
def test_a_bad_or_raising_scenario_hook_is_one_usage_error(pytester: pytest.Pytester, body: str,
                                                           fragments: tuple[str, ...]) -> None:
    pytester.makeconftest(f"from pytest_quaero.core.scenarios import Scenario\n\n"
                          f"def pytest_quaero_scenarios():\n    {body}\n")
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=light"), "pytest_quaero_scenarios in ",
                       "conftest.py", *fragments)
