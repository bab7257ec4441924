"""Fuzzing the settings parser: random strings and TOML values through every source, for every field.

Whatever comes in (command line, environment, ini, a TOML file, marker keywords, a
threshold, a scenario hook's numbers), the outcome is a valid Settings (every value
finite and in range) or a SettingsError of one line: never another exception. The
profile is derandomized, so CI sees the same examples on every run.
"""

# ruff: noqa: RUF001 - look-alike digits and letters are what these tests feed in

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_quaero.core.criteria import Thresholds, thresholds_for
from pytest_quaero.core.fault_spec import FaultError, parse_faults
from pytest_quaero.core.fields import FIELD_BY_NAME, FIELDS, MAX_SECONDS, SettingsError
from pytest_quaero.core.scenarios import BUILTIN, Scenario, scenario_value
from pytest_quaero.core.settings import Settings, resolve

settings.register_profile("quaero-fuzz", derandomize=True, deadline=None, database=None, print_blob=True)
FUZZ = settings(settings.get_profile("quaero-fuzz"), max_examples=250)

NAMES = [spec.name for spec in FIELDS]

#: what a person (or a broken CI script) may really type, and what float() and int() wrongly take
NASTY = [
    "", " ", "0", "-0", "+1", "00", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e3", "1e308", "1e309",
    "9" * 400, "9" * 5000, "0x10", "1_000", "1,5", "١٠", "５00ms", "٥٠٠ms", "𝟓s", "½s", "²", "Ⅻ", " 1 0 0 m s ",
    "1 s", "1m 30s", "50%", "50%%%", "%", "%s", "{}", "{0}", "\x00", "5\x00", "\n", "1\n2", "\t1s\t", "\udcff",
    "1..", "..", "..1ms", "1ms..", "1ms..2ms..3ms", "20ms..5ms", "true", "TRUE", "yes", "oﬀ", "ﬁ", "İ", "ı",
    "FULL", "full ", "thread", "THREAD", "proceſs", "~", "~nobody-here/x.db", "/", "/dev/null", ".", "ms", "1.",
    ".5s", "1m30", "5M", "1h" * 200, "2147483647", "2147483648", "2097152", "2097153", "9223372036854775807",
    "9223372036854775808", "8760h", "8760h1ms", "10000", "10001",
]
#: strings shaped like the grammar, with a wrong character or two mixed in
SHAPED = st.from_regex(r"[ 0-9.٥５+-]{0,8}(ms|s|m|h|%|)?(\.\.[0-9 .]{0,4}(ms|s|m|h)?)?", fullmatch=True)
STRINGS = st.one_of(st.sampled_from(NASTY), SHAPED, st.text(max_size=30))
#: os.environ holds undecodable bytes as lone surrogates
ENV_STRINGS = st.one_of(STRINGS, st.text(st.characters(exclude_categories=()), max_size=12))

#: numbers at the edges: what float() makes of '1e400', SQLite's and the OS's limits, and just past them
NASTY_NUMBERS = [float("nan"), float("inf"), -float("inf"), -0.0, 1e-320, 1e308, 3.2e7, 3.2e10, 0, -1, 1,
                 2**31 - 1, 2**31, 2**21, 2**21 + 1, 2**63 - 1, 2**63, 10**30, 10_000, 10_001]
TOML_SCALARS = st.one_of(
    st.sampled_from(NASTY_NUMBERS),
    STRINGS.filter(lambda s: "\udcff" not in s),  # a TOML file is UTF-8: no lone surrogates
    st.integers(), st.floats(), st.booleans(),
    st.dates(), st.times(), st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)),
)
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
#: anything a marker keyword may hold: Python values, not only TOML's
PYTHON_VALUES = st.one_of(TOML_VALUES, st.none(), st.just(float("nan")), st.tuples(st.floats(), st.floats()),
                          st.builds(object), st.binary(max_size=5), st.sampled_from([Path("x.db"), 10**400]))


def _toml_string(text: str) -> str:
    # JSON's escapes are TOML's too; TOML also wants DEL escaped
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007F")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return str(value.isoformat())  # date, time, datetime


def _expect_settings_or_error(make: Callable[[], Settings], name: str = "", raw: Any = None) -> None:
    """A valid Settings, or one SettingsError of one line: nothing else.

    A string accepted for a number, duration or keyword is plain ASCII with no space inside.
    """
    try:
        made = make()
    except SettingsError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 1000, message
        return
    assert isinstance(made, Settings)
    _assert_valid(made)
    if name and isinstance(raw, str) and raw and FIELD_BY_NAME[name].ascii_only:
        assert raw.isascii() and not any(char.isspace() for char in raw.strip()), (name, raw)


def _assert_valid(s: Settings) -> None:
    for name in ("stagger", "retry_backoff", "visibility_timeout", "poll_interval"):
        value = getattr(s, name)
        assert isinstance(value, float) and 0 <= value <= MAX_SECONDS, (name, value)
    low, high = s.job_time
    assert 0 <= low <= high <= MAX_SECONDS
    assert s.visibility_timeout > 0
    assert 0 <= s.busy_timeout_ms <= 2**31 - 1 and s.cache_size_mb >= 1 and s.cache_size_mb * 1024 <= 2**31
    assert 1 <= s.workers <= 10_000
    for name in ("retry_attempts", "max_receive", "seed"):
        assert type(getattr(s, name)) is int and 0 <= getattr(s, name) <= 2**63 - 1
    assert s.synchronous in ("OFF", "NORMAL", "FULL", "EXTRA") and s.worker_mode in ("thread", "process")
    assert isinstance(s.wal, bool) and isinstance(s.begin_immediate, bool)
    assert s.queue_name and s.queue_name.isprintable()
    s.queue_name.encode("utf-8")


# ---------------------------------------------------------------- every source, every field


@FUZZ
@given(name=st.sampled_from(NAMES), value=STRINGS)
def test_command_line(name: str, value: str) -> None:
    _expect_settings_or_error(lambda: resolve({name: value}, {}, {}), name, value)


@FUZZ
@given(name=st.sampled_from(NAMES), value=ENV_STRINGS, alias=st.booleans())
def test_environment(name: str, value: str, alias: bool) -> None:
    # the option's own variable, or the Quaero service's one (read the same way)
    names = FIELD_BY_NAME[name].env_names
    env = names[-1] if alias else names[0]
    _expect_settings_or_error(lambda: resolve({}, {env: value}, {}), name, value)


@FUZZ
@given(name=st.sampled_from(NAMES), value=STRINGS)
def test_ini(name: str, value: str) -> None:
    ini = FIELD_BY_NAME[name].ini
    assert ini
    _expect_settings_or_error(lambda: resolve({}, {}, {ini: value}, ini_name="tox.ini"), name, value)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "quaero.toml"


#: a document: a few (section, key) pairs, mostly real settings, sometimes thresholds or strangers
TOML_KEYS = st.one_of(
    st.sampled_from([spec.toml for spec in FIELDS if spec.toml]),
    st.sampled_from([("thresholds", "min_throughput"), ("thresholds.light", "max_execution_time"),
                     ("thresholds", "light"), ("storage", "type"), ("queue", "queue"), ("", "queue")]),
    st.tuples(st.sampled_from(["queue", "storage.sqlite", "load_test", "thresholds"]), st.text(max_size=6)),
)


@FUZZ
@given(entries=st.dictionaries(TOML_KEYS, st.one_of(st.sampled_from(NASTY_NUMBERS), TOML_SCALARS, TOML_VALUES),
                               min_size=1, max_size=4))
def test_toml_file(config_path: Path, entries: dict[tuple[str, str], Any]) -> None:
    sections: dict[str, list[str]] = {}
    for (section, key), value in entries.items():
        sections.setdefault(section, []).append(f"{_toml_string(key)} = {_toml_value(value)}")
    top = sections.pop("", [])
    text = "\n".join(top) + "\n" + "".join(f"[{name}]\n" + "\n".join(lines) + "\n" for name, lines in sections.items())
    config_path.write_text(text, encoding="utf-8")

    def load() -> Settings:
        loaded = resolve({}, {}, {}, config_file=str(config_path))
        # thresholds are read when a scenario is chosen: the same outcome is required there
        for scenario in BUILTIN.values():
            assert isinstance(thresholds_for(scenario, loaded.thresholds, loaded.threshold_sources), Thresholds)
        return loaded

    _expect_settings_or_error(load)


@FUZZ
@given(name=st.sampled_from([*NAMES, "wokers", ""]), value=PYTHON_VALUES)
def test_marker_keywords(name: str, value: Any) -> None:
    _expect_settings_or_error(lambda: Settings().replace(source="@pytest.mark.quaero_scenario on t.py::t",
                                                         **{name: value}), name if name in FIELD_BY_NAME else "", value)


@FUZZ
@given(key=st.sampled_from(["parents", "children", "time_limit"]), value=PYTHON_VALUES | STRINGS)
def test_marker_scenario_values(key: str, value: Any) -> None:
    try:
        number = scenario_value(key, value, where="@pytest.mark.quaero_scenario on t.py::t")
    except SettingsError as exc:
        assert "\n" not in str(exc)
        return
    values: dict[str, Any] = {"parents": 1, "children": 1, key: number}
    Scenario("fuzz", **values)  # what the marker accepted, a Scenario takes


@FUZZ
@given(parents=PYTHON_VALUES, children=PYTHON_VALUES, time_limit=PYTHON_VALUES)
def test_hook_scenarios(parents: Any, children: Any, time_limit: Any) -> None:
    try:
        scenario = Scenario("fuzz", parents, children, time_limit)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert scenario.parents >= 1 and scenario.children >= 1 and 0 < scenario.time_limit <= MAX_SECONDS


@FUZZ
@given(key=st.sampled_from([*Thresholds.__dataclass_fields__, "nope"]), value=STRINGS,
       scope=st.sampled_from(["", "light.", "heavy."]))
def test_threshold_lines(key: str, value: str, scope: str) -> None:
    try:
        loaded = resolve({}, {}, {}, threshold_cli=[f"{scope}{key}={value}"])
        limits = thresholds_for(BUILTIN[scope.rstrip(".") or "light"], loaded.thresholds, loaded.threshold_sources)
    except SettingsError as exc:
        assert "\n" not in str(exc)
        return
    for name in Thresholds.__dataclass_fields__:
        number = getattr(limits, name)
        assert math.isfinite(number) and number >= 0, (name, number)
    assert key == "nope" or value.isascii() or value.strip() == "", value  # '٣' is no count
    assert "%%" not in value, value


@FUZZ
@given(spec=st.one_of(STRINGS, st.from_regex(
    r"(kill-worker|kill-producer|restart-pool)(:(after|at|hold|parent)=[0-9.%٥ ]{0,5}(ms|s)?)?", fullmatch=True)))
def test_fault_specs(spec: str) -> None:
    try:
        faults = parse_faults(spec)
    except FaultError:
        return
    for fault in faults:
        for key in ("at", "hold"):
            value = fault.params.get(key)
            assert value is None or 0 <= value <= MAX_SECONDS
