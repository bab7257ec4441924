"""--quaero-explore and --quaero-replay end to end, with pytester.

A conftest plugs a two-statement claim into the run through the public hook; exploring
the ``explore`` scenario must fail its duplicate criterion with the replay flag, the trace
hash and the trace's last steps in the failure, the JSON must carry the exploration, and
the printed flag must rerun the identical schedule. The built-in queue passes; bad values
and process mode are usage errors naming the option.
"""

from __future__ import annotations

import json
import re

import pytest

# Imported before pytester's first in-process run, so the runs below reuse them (see test_plugin.py).
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import criteria, harness, run  # noqa: F401
from pytest_quaero.core.explore import runner, scheduler  # noqa: F401

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")

TWO_STATEMENT_CLAIM = '''
from pytest_quaero.core.queue import DUE, Message, Queue


class TwoStatementClaim(Queue):
    def receive(self):
        row = self.conn.execute(
            f"select id, body, received from goqite where queue = ? and received < ? and {DUE} "
            "order by priority desc, created limit 1", (self.name, self.max_receive)).fetchone()
        if row is None:
            return None
        self.conn.execute("update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), "
                          "received = received + 1 where id = ?", (self._timeout_offset, row[0]))
        return Message(row[0], bytes(row[1]), row[2] + 1)


def pytest_quaero_make_queue(settings, db_path, connection):
    return TwoStatementClaim(connection(), settings.queue_name, visibility_timeout=settings.visibility_timeout,
                             max_receive=settings.max_receive)
'''


def run_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE, "--quaero-scenario=explore", *args)


def test_an_explored_race_fails_with_its_replay_flag_and_the_flag_replays_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(TWO_STATEMENT_CLAIM)
    found = run_pytest(pytester, "--quaero-explore=random:200", "--quaero-json=out.json")
    found.assert_outcomes(failed=1, passed=9)
    text = found.stdout.str()
    match = re.search(r"replay with --quaero-replay=(\S+) \(trace hash ([0-9a-f]{16})\); the last (\d+) of", text)
    assert match, text
    token, trace_hash = match.group(1), match.group(2)
    assert re.search(r"Jobs Processed Twice: measured [1-9]", text), text
    assert re.search(r"^\s+\d+ worker-\d: update goqite set timeout", text, re.MULTILINE)  # the steps themselves
    data = json.loads((pytester.path / "out.json").read_text())
    exploration = data["results"][0]["extra"]["exploration"]
    assert exploration["failing"]["token"] == token and exploration["failing"]["trace_hash"] == trace_hash
    assert len(exploration["failing"]["tail"]) == int(match.group(3))

    again = run_pytest(pytester, f"--quaero-replay={token}")
    again.assert_outcomes(failed=1, passed=9)
    assert f"--quaero-replay={token} (trace hash {trace_hash})" in again.stdout.str()


def test_the_builtin_queue_passes_explored_schedules(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-explore=pct:8")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["quaero[[]explore[]] * PASS * [[]explored pct:8:3: 8 schedules (*/s), none failed[]]",
                                 "*Throughput*not judged (explored)*PASS*"])


@pytest.mark.parametrize(("args", "fragments"), [
    (("--quaero-explore=fast:10",), ("--quaero-explore=fast:10 (command line): invalid value for --quaero-explore",
                                     "random, pct or systematic")),
    (("--quaero-replay=random",), ("invalid value for --quaero-replay", "random.SEED")),
    (("--quaero-explore=random:10", "--quaero-worker-mode=process"),
     ("--quaero-worker-mode=process (command line): exploration needs thread workers", "over a pipe")),
])
def test_bad_exploration_settings_are_usage_errors(pytester: pytest.Pytester, args: tuple[str, ...],
                                                  fragments: tuple[str, ...]) -> None:
    result = run_pytest(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def test_the_reports_show_the_failing_schedule_from_the_result_alone() -> None:
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.report.exploration import exploration_html, exploration_text
    from pytest_quaero.report.html import criteria_table_html

    failing = {"number": 3, "token": "pct.9.3.80", "trace_hash": "0123456789abcdef", "failed": ["hierarchy_integrity"],
               "tail": ["  41 worker-1: update crawl_jobs set completed_urls = ? <x> -> ok, 1 changed"]}
    result = RunResult(scenario="explore", parents=1, children_per_parent=4, run_id="r", settings={}, extra={
        "exploration": {"strategy": "pct:200:3", "schedules": 3, "schedules_per_second": 20.0, "failing": failing,
                        "last": failing}})
    assert exploration_text(result) == ("explored pct:200:3: schedule 3 of 3 failed hierarchy_integrity; replay with "
                                        "--quaero-replay=pct.9.3.80 (trace hash 0123456789abcdef)")
    html = criteria_table_html(result, "explore")
    assert exploration_html(result) in html
    assert "<pre class=\"quaero-trace\">  41 worker-1: update crawl_jobs set completed_urls = ? &lt;x&gt;" in html
    replayed = RunResult(scenario="explore", parents=1, children_per_parent=4, run_id="r", settings={}, extra={
        "exploration": {"strategy": "replay pct.9.3.80", "schedules": 1, "failing": None,
                        "last": {**failing, "failed": []}}})
    assert exploration_text(replayed) == "replay pct.9.3.80: trace hash 0123456789abcdef, passed"
    free = RunResult(scenario="light", parents=5, children_per_parent=20, run_id="r", settings={})
    assert exploration_text(free) == ""
