"""Every setting is spelled after its option in each source, and ``--help`` says so.

``--quaero-workers`` is ``QUAERO_WORKERS`` in the environment and ``quaero_workers`` in an ini
file; the Quaero service's own variables (``QUAERO_QUEUE_CONCURRENCY``) are still read, after
those; the old ini key ``quaero_cache_size_mb`` still works, with a deprecation warning.
"""

from __future__ import annotations

import pytest

from pytest_quaero.core.fields import FIELD_BY_NAME, FIELDS
from pytest_quaero.core.settings import resolve

#: the Quaero service's variable for each setting that had one before the option-named ones
SERVICE_NAMES = {
    "workers": "QUAERO_QUEUE_CONCURRENCY", "stagger": "QUAERO_QUEUE_STAGGER",
    "busy_timeout_ms": "QUAERO_SQLITE_BUSY_TIMEOUT_MS", "retry_attempts": "QUAERO_SQLITE_RETRY_ATTEMPTS",
    "retry_backoff": "QUAERO_SQLITE_RETRY_BACKOFF", "visibility_timeout": "QUAERO_QUEUE_VISIBILITY_TIMEOUT",
    "max_receive": "QUAERO_QUEUE_MAX_RECEIVE", "poll_interval": "QUAERO_QUEUE_POLL_INTERVAL",
    "wal": "QUAERO_SQLITE_WAL_MODE", "synchronous": "QUAERO_SQLITE_SYNCHRONOUS",
    "cache_size_mb": "QUAERO_SQLITE_CACHE_SIZE_MB",
    "job_time": "QUAERO_LOAD_JOB_TIME", "worker_mode": "QUAERO_LOAD_WORKER_MODE", "seed": "QUAERO_LOAD_SEED",
    "begin_immediate": "QUAERO_SQLITE_BEGIN_IMMEDIATE", "db_path": "QUAERO_LOAD_DB",
}


@pytest.mark.parametrize("spec", FIELDS, ids=lambda spec: spec.name)
def test_env_and_ini_names_follow_the_option(spec) -> None:
    suffix = spec.option.removeprefix("--quaero-")
    assert spec.env == "QUAERO_" + suffix.replace("-", "_").upper()
    assert spec.ini == "quaero_" + suffix.replace("-", "_")
    assert spec.env_names[0] == spec.env
    if spec.name in SERVICE_NAMES:
        assert SERVICE_NAMES[spec.name] in spec.env_names


@pytest.mark.parametrize("name", sorted(SERVICE_NAMES))
def test_both_environment_names_are_read_and_the_options_own_wins(name: str) -> None:
    spec = FIELD_BY_NAME[name]
    value = {"workers": "3", "retry_attempts": "7", "max_receive": "4", "seed": "9", "cache_size_mb": "8",
             "busy_timeout_ms": "250", "wal": "false", "begin_immediate": "false", "synchronous": "FULL",
             "worker_mode": "process", "job_time": "3ms", "db_path": "q.db"}.get(name, "7s")
    other = {"wal": "true", "begin_immediate": "true", "synchronous": "OFF", "worker_mode": "thread",
             "db_path": "other.db", "job_time": "4ms"}.get(name, "2" if value.isdigit() else "3s")
    alone = {spec.name: value}
    by_service = resolve({}, {SERVICE_NAMES[name]: value}, {})
    by_option = resolve({}, {spec.env: value}, {})
    assert getattr(by_service, name) == getattr(by_option, name) == getattr(resolve(alone, {}, {}), name)
    assert by_service.sources[name] == SERVICE_NAMES[name] and by_option.sources[name] == spec.env
    both = resolve({}, {spec.env: value, SERVICE_NAMES[name]: other}, {})
    assert getattr(both, name) == getattr(by_option, name) and both.sources[name] == spec.env


def test_an_error_names_the_variable_it_came_from() -> None:
    with pytest.raises(ValueError, match=r"^QUAERO_WORKERS=abc \(environment\): invalid value for --quaero-workers"):
        resolve({}, {"QUAERO_WORKERS": "abc", "QUAERO_QUEUE_CONCURRENCY": "3"}, {})


def test_help_types_the_ini_keys_and_names_the_variables(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--help")
    assert result.ret == 0
    text = " ".join(result.stdout.str().split())  # argparse wraps lines wherever it likes
    # pytest < 8.4 has no int ini type: those keys stay strings there (and are read the same way)
    int_type = "int" if tuple(int(part) for part in pytest.__version__.split(".")[:2]) >= (8, 4) else "string"
    for key in ("quaero_workers", "quaero_retries", "quaero_max_receive", "quaero_seed", "quaero_cache_size"):
        assert f"{key} ({int_type}):" in text, key
    for key in ("quaero_wal", "quaero_begin_immediate"):
        assert f"{key} (bool):" in text, key
    assert "quaero_stagger (string):" in text  # a duration: '500ms'
    assert f"quaero_cache_size_mb ({int_type}): deprecated name of quaero_cache_size." in text
    assert "Env: QUAERO_WORKERS or QUAERO_QUEUE_CONCURRENCY; ini: quaero_workers." in text
    for spec in FIELDS:
        assert " or ".join(spec.env_names) in text, spec.name


_SHOW = """
def test_show(quaero_settings):
    s = quaero_settings
    print("SETTINGS", s.workers, s.cache_size_mb, s.wal, s.sources["workers"], s.sources["cache_size_mb"], sep="|")
"""


def _settings_line(result: pytest.RunResult) -> list[str]:
    line = next(line for line in result.outlines if "SETTINGS|" in line)
    return line.partition("SETTINGS|")[2].split("|")


def test_typed_ini_values_are_read(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nquaero_workers = 3\nquaero_cache_size = 16\nquaero_wal = false\n")
    pytester.makepyfile(_SHOW)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    assert result.ret == 0, result.stdout.str()
    assert _settings_line(result) == ["3", "16", "False", "quaero_workers (tox.ini)", "quaero_cache_size (tox.ini)"]


def test_the_old_cache_size_key_still_works_with_a_deprecation_warning(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nquaero_cache_size_mb = 8\n")
    pytester.makepyfile(_SHOW)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    assert result.ret == 0, result.stdout.str()
    assert _settings_line(result)[1] == "8"
    result.stdout.fnmatch_lines(["*PytestDeprecationWarning: ini option quaero_cache_size_mb is deprecated: "
                                 "rename it quaero_cache_size*"])
    # the new name wins when both are there
    pytester.makeini("[pytest]\nquaero_cache_size_mb = 8\nquaero_cache_size = 32\n")
    assert _settings_line(pytester.runpytest("-p", "no:cacheprovider", "-s"))[1] == "32"


@pytest.mark.parametrize("line, value", [("quaero_workers = \u0663", "\u0663"), ("quaero_workers = 3_0", "3_0"),
                                         ("quaero_wal = maybe", "maybe")])
def test_typed_ini_values_get_the_same_checks_as_every_source(pytester: pytest.Pytester, line: str,
                                                              value: str) -> None:
    # int() would read the Arabic-Indic digit and 3_0: the settings parser does not
    pytester.makeini(f"[pytest]\n{line}\n")
    pytester.makepyfile(_SHOW)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    key = line.split(" = ")[0]
    option = FIELD_BY_NAME["workers" if key == "quaero_workers" else "wal"].option
    assert f"{key} = {value} (tox.ini): invalid value for {option}" in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_environment_over_ini_in_a_real_session(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAERO_QUEUE_CONCURRENCY", "5")
    monkeypatch.setenv("QUAERO_WORKERS", "4")
    pytester.makeini("[pytest]\nquaero_workers = 3\n")
    pytester.makepyfile(_SHOW)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    assert _settings_line(result)[0::3] == ["4", "QUAERO_WORKERS"]


@pytest.mark.skipif(int(pytest.__version__.split(".")[0]) < 9, reason="[tool.pytest] native TOML is pytest 9")
def test_native_toml_values_are_read(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.pytest]\nquaero_workers = 6\nquaero_wal = false\n")
    pytester.makepyfile(_SHOW)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    assert result.ret == 0, result.stdout.str()
    assert _settings_line(result)[:3] == ["6", "64", "False"]
