"""Exploration strategies, replay tokens and the two settings, without threads or databases."""

from __future__ import annotations

import itertools

import pytest

from pytest_quaero.core.explore.strategies import (
    PCTStrategy,
    RandomStrategy,
    SystematicSearch,
    SystematicStrategy,
    parse_explore,
    parse_token,
)
from pytest_quaero.core.explore.trace import Trace
from pytest_quaero.core.settings import Settings, SettingsError, resolve

WORKERS = ("producer-1", "worker-1", "worker-2")


def drive(strategy, steps: int = 60) -> list[str]:  # type: ignore[no-untyped-def]
    """The picks a strategy makes over ``steps`` points where every worker can run."""
    current = None
    picks = []
    for _ in range(steps):
        current = strategy.choose(list(WORKERS), current)
        picks.append(current)
    return picks


@pytest.mark.parametrize("make", [lambda: RandomStrategy(41), lambda: PCTStrategy(41, 3, 60),
                                  lambda: SystematicStrategy({3: 2, 9: 0})])
def test_a_token_takes_the_same_decisions_again(make) -> None:  # type: ignore[no-untyped-def]
    strategy = make()
    picks = drive(strategy)
    again = parse_token(strategy.token)
    assert again.token == strategy.token
    assert drive(again) == picks
    assert len(set(picks)) > 1


def test_pct_runs_the_highest_priority_and_demotes_at_its_change_points() -> None:
    picks = drive(PCTStrategy(5, 1, 60))  # depth 1: no change point, one worker runs throughout
    assert len(set(picks)) == 1
    deeper = drive(PCTStrategy(5, 3, 60))  # two change points: the runner changes at most twice
    switches = sum(1 for a, b in itertools.pairwise(deeper) if a != b)
    assert 1 <= switches <= 2


def test_the_systematic_search_tries_each_single_switch_once_fewest_switches_first() -> None:
    search = SystematicSearch(bound=2)
    seen = []
    for strategy in search:
        drive(strategy, 4)
        seen.append(strategy.token)
        search.ran(strategy)
    assert seen[0] == "sys.0"
    singles = [token for token in seen if token.count("-") == 1]
    doubles = [token for token in seen if token.count("-") == 2]
    assert len(singles) == 4 * 2  # 4 points, 2 other workers at each
    assert seen.index(doubles[0]) > seen.index(singles[-1])  # breadth first
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(("text", "parsed"), [
    ("random:500", ("random", 500, 0)), ("PCT:20", ("pct", 20, 3)), (" pct:20:5 ", ("pct", 20, 5)),
    ("systematic:40", ("systematic", 40, 1)), ("systematic:40:2", ("systematic", 40, 2)),
])
def test_explore_specs(text: str, parsed: tuple[str, int, int]) -> None:
    spec = parse_explore(text)
    assert (spec.strategy, spec.schedules, spec.parameter) == parsed


@pytest.mark.parametrize("text", ["random", "random:0", "random:5:2", "fast:5", "pct:5:0", "pct:5:65", "random:-1",
                                  "random:1e3", "random:\uff15", ""])
def test_bad_explore_specs_name_the_option_and_what_is_allowed(text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        resolve({"explore": text}, {}, {}) if text else resolve({}, {"QUAERO_EXPLORE": " x"}, {})
    message = str(caught.value)
    assert "--quaero-explore" in message and "random, pct or systematic" in message, message


@pytest.mark.parametrize("text", ["random.", "random.x", "pct.1.2", "sys.", "sys.3", "sys.3-", "replay.1"])
def test_bad_replay_tokens_name_the_option_and_the_token_forms(text: str) -> None:
    with pytest.raises(SettingsError, match=r"invalid value for --quaero-replay; allowed: a replay token"):
        resolve({"replay": text}, {}, {})


def test_settings_take_both_options_from_every_source() -> None:
    settings = resolve({}, {"QUAERO_EXPLORE": "PCT:30:2"}, {"quaero_replay": "random.7"})
    assert (settings.explore, settings.replay) == ("pct:30:2", "random.7")
    assert settings.sources["explore"] == "QUAERO_EXPLORE"
    assert Settings().describe("explore") == "(off)"


@pytest.mark.parametrize(("extra", "words"), [
    ({"worker_mode": "process"}, "--quaero-worker-mode=process (command line): exploration needs thread workers"),
])
def test_exploration_needs_thread_workers(extra: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError) as caught:
        resolve({"explore": "random:5", **extra}, {}, {})
    assert words in str(caught.value)
    assert "--quaero-explore=random:5 (command line)" in str(caught.value)
    assert "over a pipe" in str(caught.value)  # and why


def test_the_trace_names_random_ids_stably_and_hashes_what_it_shows() -> None:
    first, second = Trace(), Trace()
    for trace, run, message in ((first, "1a2b3c4d", "m_" + "a" * 32), (second, "99999999", "m_" + "b" * 32)):
        trace.add("worker-1", "delete from goqite where id = ?", (message,), "ok, 1 changed")
        trace.add("worker-2", "update crawl_jobs set x = 1 where id = ?", (f"{run}-child-1-2",), "ok")
        trace.add("producer-1", "insert into goqite (body) values (?)",
                  (f'{{"id":"{run}-child-1-2","created_at":1764773400.123}}'.encode(),), "ok")
    assert first.steps == second.steps and first.hash == second.hash
    assert "m1" in first.steps[0] and "RUN-child-1-2" in first.steps[1] and '"created_at":T' in first.steps[2]
    second.add("worker-1", "select 1")
    assert second.hash != first.hash
