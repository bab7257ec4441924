"""Contention loads from other processes: the SPEC, what they do to the database, what is recorded."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_quaero.core.contention import ContentionError, ContentionLoad, parse_contention
from pytest_quaero.core.criteria import Thresholds, evaluate
from pytest_quaero.core.run import run_scenario
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.settings import Settings

FAST = Settings().replace(job_time="1ms", stagger="0ms", poll_interval="10ms", workers=2)


def test_spec_syntax() -> None:
    loads = parse_contention("writer:hold=200ms,every=1s;reader:snapshot=5s; burst:producers=8,every=2s;reader")
    assert [load.kind for load in loads] == ["writer", "reader", "burst", "reader"]
    assert loads[0].params == {"hold": 0.2, "every": 1.0, "start": 0.0}
    assert loads[1].params["snapshot"] == 5.0 and loads[3].params["snapshot"] == 5.0  # defaults
    assert loads[2].params["producers"] == 8 and loads[2].params["messages"] == 10


@pytest.mark.parametrize("spec, said", [
    ("vacuum:every=1s", "unknown load 'vacuum'; allowed: writer, reader, burst"),
    ("writer:hold=fast", "invalid hold='fast'; allowed: a duration"),
    ("writer:period=1s", "unknown setting 'period=1s' for writer; allowed: hold=DURATION, every=DURATION"),
    ("writer:hold=2s,every=1s", "every (1s) must be >= hold (2s)"),
    ("burst:producers=0", "invalid producers='0'; allowed: a whole number >= 1"),
    (";", "name at least one load"),
])
def test_bad_specs_name_the_option(spec: str, said: str) -> None:
    with pytest.raises(ContentionError) as info:
        parse_contention(spec)
    assert str(info.value).startswith("--quaero-contention=")
    assert said in str(info.value)


def test_loads_contend_and_wal_and_checkpoints_are_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_path = str(tmp_path / "quaero.db")
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(file) if isinstance(file, (str, os.PathLike)) else str(file))
        return real_open(file, *args, **kwargs)

    def spy_os_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.fspath(path))
        return real_os_open(path, *args, **kwargs)

    # The test process must never open the database file itself (POSIX locks would drop).
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    load = ContentionLoad.from_spec(
        "writer:hold=40ms,every=100ms;reader:snapshot=10s;burst:producers=3,every=150ms,messages=30"
    )
    result = run_scenario(Scenario("tiny", 3, 20, 30.0), FAST, run_dir=tmp_path, deadline=20.0,
                          sample_interval=0.05, disturbances=[load])
    monkeypatch.undo()
    assert db_path not in opened

    info = result.extra["contention"]
    assert not info["errors"], info["errors"]
    kinds = {entry["kind"]: entry for entry in info["loads"]}
    assert set(kinds) == {"writer", "reader", "burst"}
    assert all(entry["pid"] not in (None, os.getpid()) for entry in info["loads"])  # each in its own process
    assert len({entry["pid"] for entry in info["loads"]}) == 3
    writer = kinds["writer"]
    assert writer["iterations"] >= 1 and writer["lock_held_seconds"] >= 0.04 * writer["iterations"] * 0.9
    assert kinds["burst"]["messages"] >= 90
    assert kinds["reader"]["snapshot_seconds"] > 0
    # the reader's open snapshot starves the checkpoint while it runs; once it is gone, TRUNCATE works
    assert info["checkpoint_under_load"]["busy"] == 1
    assert info["checkpoint_after"]["busy"] == 0
    assert info["wal_final_bytes"] == 0 and info["checkpoint_after"]["wal_bytes"] == 0
    assert info["wal_max_bytes"] > 0
    offsets = [sample[0] for sample in info["wal_samples"]]
    assert offsets == sorted(offsets) and len(offsets) >= 3
    labels = [entry["label"] for entry in result.timeline]
    assert any(label.startswith("Contention loads started") for label in labels)
    # the pool itself still did its job, untouched by the side queue the bursts used
    verdicts = {v.criterion: v for v in evaluate(result, Thresholds(max_execution_time=20.0))}
    assert verdicts["completion_rate"].passed and verdicts["queue_deletion"].passed
    assert result.messages_enqueued == 60


def test_a_lock_holding_writer_is_felt_by_a_pool_without_busy_timeout(tmp_path: Path) -> None:
    settings = FAST.replace(busy_timeout_ms=0, retry_backoff="10ms")
    result = run_scenario(Scenario("tiny", 2, 10, 30.0), settings, run_dir=tmp_path, deadline=10.0,
                          sample_interval=0.05, disturbances=[ContentionLoad.from_spec("writer:hold=40ms,every=80ms")])
    assert result.busy_errors > 0
    assert result.extra["contention"]["loads"][0]["busy_errors"] == 0  # the load itself waits patiently


def test_counts_are_ascii_digits_only() -> None:
    """``\\d`` and int() also take Arabic-Indic and fullwidth digits; a count here must not."""
    for spec in ("burst:producers=\N{ARABIC-INDIC DIGIT FIVE}", "burst:producers=\N{FULLWIDTH DIGIT FIVE}"):
        with pytest.raises(ContentionError, match="allowed: a whole number >= 1"):
            parse_contention(spec)
