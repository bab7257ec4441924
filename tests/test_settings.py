"""Settings: durations, every source, precedence, error messages, the TOML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_quaero.core.fields import FIELDS, SettingsError, format_duration, parse_duration
from pytest_quaero.core.settings import Settings, resolve, to_toml

# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1s", 1.0),
        ("5m", 300.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1h", 3600.0),
        ("0", 0.0),
        ("0ms", 0.0),
        (" 250ms ", 0.25),
        ("2m0s500ms", 120.5),
    ],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "fast", "500", "ms", "-1s", "1m30", "5 minutes", "1s2", "s1", "5M", "1..2s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (1.0, "1s"), (300.0, "5m"), (90.0, "90s"), (0.0, "0s"), (1.5, "1500ms"), (0.0015, "1.5ms")],
)
def test_format_duration_reads_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


# ---------------------------------------------------------------- defaults


def test_defaults_are_the_templates() -> None:
    s = resolve({}, {}, {})
    assert (s.workers, s.stagger, s.busy_timeout_ms) == (2, 0.5, 10_000)
    assert (s.retry_attempts, s.retry_backoff) == (5, 0.1)
    assert (s.visibility_timeout, s.max_receive, s.poll_interval) == (300.0, 3, 1.0)
    assert (s.wal, s.synchronous, s.cache_size_mb) == (True, "NORMAL", 64)
    assert s.queue_name == "quaero_jobs"
    assert s.job_time == (0.005, 0.020)
    assert s.worker_mode == "thread"
    assert s.seed == 0
    assert s.db_path is None
    assert set(s.sources) == {spec.name for spec in FIELDS}
    assert set(s.sources.values()) == {"default"}
    assert s == Settings()


# ---------------------------------------------------------------- each source alone


def test_cli_source() -> None:
    s = resolve({"workers": "4", "stagger": "250ms", "job_time": "1ms..3ms", "worker_mode": "process"}, {}, {})
    assert s.workers == 4
    assert s.stagger == 0.25
    assert s.job_time == (0.001, 0.003)
    assert s.worker_mode == "process"
    assert s.sources["workers"] == "command line"
    assert s.sources["stagger"] == "command line"
    assert s.sources["seed"] == "default"


@pytest.mark.parametrize(
    ("env", "raw", "name", "value"),
    [
        ("QUAERO_QUEUE_CONCURRENCY", "3", "workers", 3),
        ("QUAERO_QUEUE_POLL_INTERVAL", "100ms", "poll_interval", 0.1),
        ("QUAERO_QUEUE_VISIBILITY_TIMEOUT", "1m", "visibility_timeout", 60.0),
        ("QUAERO_QUEUE_MAX_RECEIVE", "7", "max_receive", 7),
        ("QUAERO_QUEUE_NAME", "other", "queue_name", "other"),
        ("QUAERO_QUEUE_STAGGER", "50ms", "stagger", 0.05),
        ("QUAERO_SQLITE_BUSY_TIMEOUT_MS", "2500", "busy_timeout_ms", 2500),
        ("QUAERO_SQLITE_WAL_MODE", "false", "wal", False),
        ("QUAERO_LOAD_DB", "/tmp/q.db", "db_path", "/tmp/q.db"),
        ("QUAERO_LOAD_WORKER_MODE", "process", "worker_mode", "process"),
    ],
)
def test_env_source(env: str, raw: str, name: str, value: object) -> None:
    s = resolve({}, {env: raw}, {})
    assert getattr(s, name) == value
    assert s.sources[name] == env


def test_env_ignores_unrelated_variables() -> None:
    s = resolve({}, {"QUAERO_STORAGE_TYPE": "sqlite", "PATH": "/bin", "QUAERO_SOMETHING": "x"}, {})
    assert s == Settings()


def test_ini_source() -> None:
    s = resolve({}, {}, {"quaero_workers": "6", "quaero_busy_timeout": "5s", "quaero_synchronous": "full"},
                ini_name="tox.ini")
    assert s.workers == 6
    assert s.busy_timeout_ms == 5000
    assert s.synchronous == "FULL"
    assert s.sources["workers"] == "quaero_workers (tox.ini)"


def test_ini_empty_value_means_unset() -> None:
    s = resolve({}, {}, {"quaero_workers": "", "quaero_stagger": None})
    assert s.workers == 2 and s.sources["workers"] == "default"


FULL_TOML = """\
[queue]
concurrency = 3
poll_interval = "200ms"
visibility_timeout = "5m"
max_receive = 4
queue_name = "from_toml"

[storage]
type = "sqlite"

[storage.sqlite]
path = "./data/quaero.db"
enable_fts5 = true
enable_vector = true
embedding_dimension = 768
busy_timeout_ms = 7000
wal_mode = true
cache_size_mb = 32

[load_test]
job_time = "2ms..4ms"
seed = 42

[thresholds]
min_throughput = 5

[thresholds.medium]
min_completion_rate = 90
"""


def test_toml_source_with_quaeros_own_keys(tmp_path: Path) -> None:
    config = tmp_path / "quaero.toml"
    config.write_text(FULL_TOML)
    s = resolve({}, {}, {}, config_file=str(config))
    assert s.workers == 3
    assert s.poll_interval == 0.2
    assert s.max_receive == 4
    assert s.queue_name == "from_toml"
    assert s.busy_timeout_ms == 7000
    assert s.cache_size_mb == 32
    assert s.db_path is None  # [storage.sqlite] path is the service's file: never the load test's
    assert s.job_time == (0.002, 0.004)
    assert s.seed == 42
    assert s.thresholds == {"*": {"min_throughput": "5"}, "medium": {"min_completion_rate": "90"}}
    assert s.sources["workers"] == f"{config} [queue] concurrency"
    assert s.sources["busy_timeout_ms"] == f"{config} [storage.sqlite] busy_timeout_ms"
    assert s.sources["stagger"] == "default"


def test_templates_recommended_block_loads(tmp_path: Path) -> None:
    """The report template's "Recommended Production Settings" block, comments and all."""
    config = tmp_path / "quaero.toml"
    config.write_text(
        '[queue]\nconcurrency = 2              # Staggered worker startup prevents contention\n'
        'poll_interval = "1s"\nvisibility_timeout = "5m"\nmax_receive = 3\n\n'
        '[storage.sqlite]\nbusy_timeout_ms = 10000\nwal_mode = true\ncache_size_mb = 64\n'
    )
    s = resolve({}, {}, {}, config_file=str(config))
    assert s == Settings()
    assert s.sources["max_receive"].endswith("[queue] max_receive")


# ---------------------------------------------------------------- precedence


def test_precedence_cli_env_toml_ini_default(tmp_path: Path) -> None:
    config = tmp_path / "quaero.toml"
    config.write_text('[queue]\nconcurrency = 3\nmax_receive = 5\npoll_interval = "300ms"\n')
    cli = {"workers": "9"}
    env = {"QUAERO_QUEUE_CONCURRENCY": "8", "QUAERO_QUEUE_MAX_RECEIVE": "6"}
    ini = {"quaero_workers": "7", "quaero_max_receive": "7", "quaero_poll_interval": "7s", "quaero_seed": "7"}
    s = resolve(cli, env, ini, config_file=str(config), ini_name="pytest.ini")
    assert (s.workers, s.sources["workers"]) == (9, "command line")
    assert (s.max_receive, s.sources["max_receive"]) == (6, "QUAERO_QUEUE_MAX_RECEIVE")
    assert (s.poll_interval, s.sources["poll_interval"]) == (0.3, f"{config} [queue] poll_interval")
    assert (s.seed, s.sources["seed"]) == (7, "quaero_seed (pytest.ini)")
    assert (s.stagger, s.sources["stagger"]) == (0.5, "default")


def test_threshold_sources_merge_cli_over_toml_over_ini(tmp_path: Path) -> None:
    config = tmp_path / "quaero.toml"
    config.write_text('[thresholds.light]\nmin_throughput = 20\nmax_busy_errors = 2\n')
    s = resolve({}, {}, {}, config_file=str(config),
                threshold_ini=["light.min_throughput = 10", "light.min_completion_rate = 50", "max_duplicates=1"],
                threshold_cli=["light.min_throughput=30"])
    assert s.thresholds["light"] == {"min_throughput": "30", "max_busy_errors": "2", "min_completion_rate": "50"}
    assert s.thresholds["*"] == {"max_duplicates": "1"}


def test_bad_threshold_line() -> None:
    with pytest.raises(SettingsError, match=r"--quaero-threshold \(command line\).*SCENARIO.*CRITERION"):
        resolve({}, {}, {}, threshold_cli=["min_throughput"])


# ---------------------------------------------------------------- round trip and replace


def test_to_toml_round_trips_defaults(tmp_path: Path) -> None:
    config = tmp_path / "effective.toml"
    config.write_text(to_toml(Settings()))
    back = resolve({}, {}, {}, config_file=str(config))
    assert back == Settings()
    # settings whose default is "none" have nothing to write
    assert all(src.startswith(str(config)) for name, src in back.sources.items()
               if getattr(Settings(), name) is not None)


def test_to_toml_round_trips_every_field(tmp_path: Path) -> None:
    cli = {
        "workers": "5", "stagger": "1m30s", "busy_timeout_ms": "1234", "retry_attempts": "7",
        "retry_backoff": "1.5ms", "visibility_timeout": "300ms", "max_receive": "9", "poll_interval": "0",
        "wal": "false", "synchronous": "extra", "cache_size_mb": "3", "queue_name": 'odd "name"',
        "job_time": "7ms", "worker_mode": "process", "seed": "11", "begin_immediate": "off",
        "db_path": str(tmp_path / "some dir.db"),
    }
    original = resolve(cli, {}, {})
    config = tmp_path / "effective.toml"
    config.write_text(to_toml(original))
    back = resolve({}, {}, {}, config_file=str(config))
    assert back == original
    assert back.as_dict() == original.as_dict()
    assert back.sources["db_path"] == f"{config} [load_test] db"


def test_to_toml_round_trips_a_path_with_a_backslash(tmp_path: Path) -> None:
    """Windows paths: a backslash in a TOML basic string must be escaped."""
    original = resolve({"db_path": r"C:\quaero\data\quaero.db"}, {}, {})
    config = tmp_path / "effective.toml"
    config.write_text(to_toml(original))
    assert resolve({}, {}, {}, config_file=str(config)).db_path == original.db_path


def test_replace_parses_and_records_source() -> None:
    s = Settings().replace(source="marker", workers="4", stagger="100ms")
    assert (s.workers, s.stagger) == (4, 0.1)
    assert s.sources["workers"] == "marker"
    with pytest.raises(SettingsError, match="marker: unknown setting 'wokers'"):
        Settings().replace(source="marker", wokers=4)
    with pytest.raises(SettingsError, match=r"stagger='fast' \(marker\).*--quaero-stagger.*allowed"):
        Settings().replace(source="marker", stagger="fast")


def test_describe() -> None:
    s = resolve({"job_time": "5ms..20ms", "stagger": "500ms"}, {}, {})
    assert s.describe("job_time") == "5ms..20ms"
    assert s.describe("stagger") == "500ms"
    assert s.describe("busy_timeout_ms") == "10000ms"
    assert s.describe("visibility_timeout") == "5m"
    assert s.describe("db_path") == "(temporary file)"


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("cli", "option", "allowed"),
    [
        ({"workers": "-1"}, "--quaero-workers", "a whole number >= 1"),
        ({"workers": "0"}, "--quaero-workers", "a whole number >= 1"),
        ({"workers": "2.5"}, "--quaero-workers", "a whole number >= 1"),
        ({"stagger": "fast"}, "--quaero-stagger", "a duration such as 500ms"),
        ({"stagger": "-1s"}, "--quaero-stagger", "a duration such as 500ms"),
        ({"visibility_timeout": "0"}, "--quaero-visibility-timeout", "(> 0)"),
        ({"busy_timeout_ms": "-5"}, "--quaero-busy-timeout", "milliseconds >= 0"),
        ({"max_receive": "0"}, "--quaero-max-receive", "a whole number >= 1"),
        ({"synchronous": "sometimes"}, "--quaero-synchronous", "OFF, NORMAL, FULL or EXTRA"),
        ({"worker_mode": "fiber"}, "--quaero-worker-mode", "thread or process"),
        ({"wal": "maybe"}, "--quaero-wal", "true or false"),
        ({"job_time": "20ms..5ms"}, "--quaero-job-time", "low..high"),
        ({"job_time": "slow"}, "--quaero-job-time", "low..high"),
        ({"queue_name": "  "}, "--quaero-queue-name", "a non-empty name"),
        ({"seed": "-3"}, "--quaero-seed", "a whole number >= 0"),
    ],
)
def test_bad_cli_value_names_option_source_and_allowed(cli: dict[str, str], option: str, allowed: str) -> None:
    with pytest.raises(SettingsError) as info:
        resolve(cli, {}, {})
    message = str(info.value)
    value = next(iter(cli.values()))
    assert message.startswith(f"{option}={value} (command line)")
    assert f"invalid value for {option}" in message
    assert "allowed: " in message and allowed in message
    assert "\n" not in message


def test_bad_env_value_names_variable() -> None:
    with pytest.raises(SettingsError) as info:
        resolve({}, {"QUAERO_QUEUE_CONCURRENCY": "abc"}, {})
    assert str(info.value) == (
        "QUAERO_QUEUE_CONCURRENCY=abc (environment): invalid value for --quaero-workers; "
        "allowed: a whole number >= 1 (at most 10000)."
    )


def test_bad_ini_value_names_ini_file() -> None:
    with pytest.raises(SettingsError, match=r"^quaero_stagger = fast \(pytest\.ini\): .*--quaero-stagger.*allowed: "):
        resolve({}, {}, {"quaero_stagger": "fast"}, ini_name="pytest.ini")


def test_bad_toml_value_names_file_section_and_key(tmp_path: Path) -> None:
    config = tmp_path / "quaero.toml"
    config.write_text("[queue]\nconcurrency = -2\n")
    with pytest.raises(SettingsError) as info:
        resolve({}, {}, {}, config_file=str(config))
    assert str(info.value).startswith(f"concurrency = -2 in [queue] of {config}: invalid value for --quaero-workers")


def test_toml_boolean_is_not_a_number(tmp_path: Path) -> None:
    config = tmp_path / "quaero.toml"
    config.write_text("[queue]\nconcurrency = true\n")
    with pytest.raises(SettingsError, match=r"concurrency = true in .queue."):
        resolve({}, {}, {}, config_file=str(config))


def test_unknown_toml_key(tmp_path: Path) -> None:
    config = tmp_path / "quaero.toml"
    config.write_text("[queue]\nconcurency = 2\n")
    with pytest.raises(SettingsError) as info:
        resolve({}, {}, {}, config_file=str(config))
    message = str(info.value)
    assert f"--quaero-config={config}" in message
    assert "unknown key 'concurency' in [queue]" in message
    assert "concurrency" in message.partition("allowed keys there:")[2]


def test_unknown_toml_section(tmp_path: Path) -> None:
    config = tmp_path / "quaero.toml"
    config.write_text("[quee]\nconcurrency = 2\n")
    with pytest.raises(SettingsError, match=r"unknown section \[quee\]; allowed sections: \[queue\]"):
        resolve({}, {}, {}, config_file=str(config))


def test_unknown_top_level_key(tmp_path: Path) -> None:
    config = tmp_path / "quaero.toml"
    config.write_text("workers = 2\n")
    with pytest.raises(SettingsError, match=r"unknown key 'workers' in \[top level\]"):
        resolve({}, {}, {}, config_file=str(config))


def test_config_not_toml(tmp_path: Path) -> None:
    config = tmp_path / "quaero.yaml"
    config.write_text("queue:\n  concurrency: 2\n")
    with pytest.raises(SettingsError, match=rf"--quaero-config={config}: not valid TOML"):
        resolve({}, {}, {}, config_file=str(config))


def test_config_missing(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        resolve({}, {}, {}, config_file=str(tmp_path / "absent.toml"))


def test_config_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot be read"):
        resolve({}, {}, {}, config_file=str(tmp_path))


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize("spec", FIELDS, ids=lambda spec: spec.name)
def test_every_field_is_spelled_in_every_source(spec) -> None:  # type: ignore[no-untyped-def]
    assert spec.option.startswith("--quaero-")
    assert spec.env and spec.env.startswith("QUAERO_")
    assert spec.toml and spec.toml[0] in ("queue", "storage.sqlite", "load_test")
    assert spec.ini and spec.ini.startswith("quaero_")
    assert spec.allowed
