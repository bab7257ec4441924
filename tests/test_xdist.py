"""pytest-xdist: scenarios kept whole on one worker, a database per worker, --quaero-shared-db.

The runs are real ``-n 2`` sessions (pytester subprocesses spawning real workers);
the scheduler and the merge are also tested directly, with fake worker nodes and
hand-made results, so their edge cases need no session at all.
"""

from __future__ import annotations

import re
import sqlite3
from types import SimpleNamespace

import pytest

pytest.importorskip("xdist")

from pytest_quaero.core.metrics import RunResult, WorkerRecord
from pytest_quaero.xdist.merge import merge_results, overlap_verdict
from pytest_quaero.xdist.scheduling import QuaeroScheduling

FAST = ("--quaero-job-time=1ms", "--quaero-stagger=100ms", "--quaero-poll-interval=50ms")
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
SCENARIOS = """
from pytest_quaero.core.scenarios import Scenario

def pytest_quaero_scenarios():
    return [Scenario("tiny", parents=2, children=5, time_limit=60.0),
            Scenario("small", parents=3, children=5, time_limit=60.0)]
"""
RAN = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] (PASSED|FAILED|ERROR) (quaero(?:-audit)?\[[^\]]+\])::(\S+)")


def run_n2(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makeconftest(SCENARIOS)
    return pytester.runpytest_subprocess(*BASE, "-n", "2", "-v", *FAST, *RELAXED, *args, timeout=120)


def where_ran(result: pytest.RunResult) -> dict[str, set[str]]:
    """node -> the workers its items ran on, from ``-v`` lines like ``[gw1] [ 50%] PASSED quaero[tiny]::x``."""
    ran: dict[str, set[str]] = {}
    for line in result.outlines:
        match = RAN.match(line)
        if match:
            ran.setdefault(match.group(3), set()).add(match.group(1))
    return ran


def test_each_scenario_runs_once_with_all_its_items_on_one_worker(pytester: pytest.Pytester) -> None:
    result = run_n2(pytester, "--quaero-scenario=tiny,small")
    result.assert_outcomes(passed=20)
    ran = where_ran(result)
    assert set(ran) == {"quaero[tiny]", "quaero[small]"} and all(len(w) == 1 for w in ran.values()), ran
    # one summary on the controller, one run per scenario
    headings = [line for line in result.outlines if re.match(r"quaero\[(tiny|small)\] \d+ x \d+ = ", line)]
    assert sorted(h.split()[0] for h in headings) == ["quaero[small]", "quaero[tiny]"], headings
    assert result.stdout.str().count("= quaero load test results =") == 1


def test_an_explicit_database_becomes_one_per_worker(pytester: pytest.Pytester) -> None:
    result = run_n2(pytester, "--quaero-scenario=tiny,small", f"--quaero-db={pytester.path / 'runs.db'}")
    result.assert_outcomes(passed=20)
    files = sorted(p.name for p in pytester.path.glob("runs*.db"))
    assert "runs.db" not in files and files and set(files) <= {"runs-gw0.db", "runs-gw1.db"}, files
    runs = set()
    for name in files:
        conn = sqlite3.connect(f"file:{pytester.path / name}?mode=ro", uri=True)
        try:
            runs |= {row[0] for row in conn.execute("select distinct substr(id, 1, 8) from crawl_jobs")}
        finally:
            conn.close()
    assert len(runs) == 2  # both scenarios' runs, each in its worker's own file


@pytest.mark.slow  # a whole pytest session of its own: CI runs it with -m slow
def test_a_shared_database_is_judged_on_the_merged_result(pytester: pytest.Pytester) -> None:
    shared = pytester.path / "shared.db"
    # 50ms jobs: each share's pool runs for a quarter second or more, so the two overlap
    # even when a busy machine starts one of them late
    result = run_n2(pytester, "--quaero-scenario=tiny", f"--quaero-shared-db={shared}", "--quaero-job-time=50ms")
    # a share per worker, then the criteria (plus the overlap) on the merge
    result.assert_outcomes(passed=2 + 10 + 1)
    ran = where_ran(result)
    assert ran["quaero[tiny@gw0]"] == {"gw0"} and ran["quaero[tiny@gw1]"] == {"gw1"}, ran
    assert len(ran["quaero[tiny]"]) == 1
    result.stdout.fnmatch_lines([
        "quaero[[]tiny[]] 4 x 5 = 20 jobs, 4 thread workers: PASS (20/20 jobs in *",
        "*Worker Staggering*gw0: gaps *; gw1: gaps *PASS",
        "*Cross-Process Overlap*with all 2 pools running*> 0s with all pools running*PASS",
        f"  database kept: {shared}",
    ])
    conn = sqlite3.connect(f"file:{shared}?mode=ro", uri=True)
    try:
        runs = conn.execute("select substr(id, 1, 8), count(*) from crawl_jobs group by 1").fetchall()
        left = conn.execute("select count(*) from goqite").fetchone()[0]
    finally:
        conn.close()
    assert [n for _, n in runs] == [12, 12] and left == 0  # two runs in ONE file, both drained


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--quaero-scenario=light",), "--quaero-shared-db=s.db: needs pytest-xdist workers; add -n N"),
        (("-n", "2", "--dist", "each"), "--quaero-shared-db=s.db: cannot be used with --dist each"),
        (("-n", "2", "--quaero-db=x.db"), "cannot be combined with a --quaero-db path (set by command line)"),
        (("-p", "no:xdist"), "--quaero-shared-db=s.db: needs pytest-xdist workers; install pytest-xdist"),
    ],
)
def test_shared_database_usage_errors(pytester: pytest.Pytester, args: tuple[str, ...], fragment: str) -> None:
    result = pytester.runpytest(*BASE, "--quaero-shared-db=s.db", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and fragment in errors[0], result.errlines


def test_a_shared_path_that_is_not_a_database_is_refused(pytester: pytest.Pytester) -> None:
    (pytester.path / "notes.txt").write_text("not sqlite")
    result = pytester.runpytest(*BASE, "-n", "2", "--quaero-shared-db=notes.txt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert any("the file exists and is not an SQLite database" in line for line in result.errlines)


@pytest.mark.slow
def test_audit_items_stay_together_under_xdist(pytester: pytest.Pytester) -> None:
    shared = pytester.path / "shared.db"
    run_n2(pytester, "--quaero-scenario=tiny", f"--quaero-shared-db={shared}").assert_outcomes(passed=13)
    result = pytester.runpytest_subprocess(*BASE, "-n", "2", "-v", f"--quaero-audit={shared}", timeout=120)
    result.assert_outcomes(passed=7)
    assert len(where_ran(result)["quaero-audit[shared.db]"]) == 1
    result.stdout.fnmatch_lines(["*= quaero audit =*"])


# ---------------------------------------------------------------- the scheduler, directly


class FakeNode:
    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[list[int]] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.append(indices)

    def shutdown(self) -> None:
        self.shutting_down = True

    def __repr__(self) -> str:
        return self.gateway.id


def scheduler(collection: list[str], fallback: str = "load") -> tuple[QuaeroScheduling, FakeNode, FakeNode]:
    config = SimpleNamespace(option=SimpleNamespace(tx=["popen", "popen"], loadscopereorder=False, dist=fallback),
                             getvalue=lambda name: ["popen", "popen"] if name == "tx" else None, hook=None)
    sched = QuaeroScheduling(config, None, fallback=fallback)  # type: ignore[arg-type]
    sched.numnodes = 2
    a, b = FakeNode("gw0"), FakeNode("gw1")
    for node in (a, b):
        sched.add_node(node)  # type: ignore[arg-type]
        sched.add_node_collection(node, collection)  # type: ignore[arg-type]
    return sched, a, b


def sent(node: FakeNode, collection: list[str]) -> list[str]:
    return [collection[i] for batch in node.sent for i in batch]


def test_scheduler_keeps_a_scenario_together_and_splits_other_tests() -> None:
    collection = ["test_a.py::test_1", "test_a.py::test_2"] + [f"quaero[light]::c{i}" for i in range(8)]
    sched, a, b = scheduler(collection)
    sched.schedule()
    assert {sched.scope_of(nodeid) for nodeid in collection} == {"test_a.py::test_1", "test_a.py::test_2",
                                                                    "quaero[light]"}
    quaero_on = [node for node in (a, b) if any(n.startswith("quaero") for n in sent(node, collection))]
    assert len(quaero_on) == 1 and len([n for n in sent(quaero_on[0], collection) if n.startswith("quaero")]) == 8


def test_scheduler_pins_shards_to_their_worker_first_and_shuts_idle_workers_down() -> None:
    collection = ["test_a.py::test_1"] + [f"quaero[tiny]::c{i}" for i in range(3)] + \
        ["quaero[tiny@gw0]::run", "quaero[tiny@gw1]::run"]
    sched, a, b = scheduler(collection)
    sched.schedule()
    assert sent(a, collection)[0] == "quaero[tiny@gw0]::run" and sent(b, collection)[0] == "quaero[tiny@gw1]::run"
    assert "quaero[tiny@gw1]::run" not in sent(a, collection)
    for node in (a, b):  # finish everything handed out, as the workers would
        for batch in list(node.sent):
            for index in batch:
                sched.mark_test_complete(node, index)  # type: ignore[arg-type]
    assert not sched.workqueue and a.shutting_down and b.shutting_down
    everything = sorted(sent(a, collection) + sent(b, collection))
    assert everything == sorted(collection)  # each item exactly once


def test_scheduler_gives_a_dead_workers_shard_to_another() -> None:
    collection = ["quaero[tiny@gw0]::run", "quaero[tiny@gw1]::run"]
    sched, a, b = scheduler(collection)
    sched.assigned_work.pop(b)  # gw1 died before anything was scheduled
    sched.schedule()
    assert sorted(sent(a, collection)) == collection


def test_scheduler_hands_a_crashed_workers_scope_to_its_replacement() -> None:
    collection = ["test_a.py::test_1"] + [f"quaero[tiny]::c{i}" for i in range(4)]
    sched, a, b = scheduler(collection)
    sched.schedule()
    assert sent(a, collection) == ["test_a.py::test_1"] and a.shutting_down  # nothing more it may take
    assert sched.remove_node(b) == "quaero[tiny]::c0"  # type: ignore[arg-type]  # b crashed
    replacement = FakeNode("gw2")
    sched.add_node(replacement)  # type: ignore[arg-type]
    sched.mark_test_complete(a, 0)  # type: ignore[arg-type]  # no work for a worker still collecting
    assert replacement.sent == [] and not sched.tests_finished
    sched.add_node_collection(replacement, collection)  # type: ignore[arg-type]
    sched.schedule()
    # the item that crashed its worker is reported failed by xdist, not run again
    assert sent(replacement, collection) == [f"quaero[tiny]::c{i}" for i in range(1, 4)]


def test_a_replacement_worker_gets_two_items_so_it_starts_running() -> None:
    collection = [f"test_a.py::test_{i}" for i in range(6)]
    sched, a, b = scheduler(collection)
    sched.schedule()
    assert sent(b, collection) == ["test_a.py::test_1", "test_a.py::test_3"]
    a.shutdown()  # say it was told to finish
    assert sched.remove_node(b) == "test_a.py::test_1"  # type: ignore[arg-type]  # b crashed
    replacement = FakeNode("gw2")
    sched.add_node(replacement)  # type: ignore[arg-type]
    sched.add_node_collection(replacement, collection)  # type: ignore[arg-type]
    sched.schedule()
    # a worker runs an item only once it holds the next one (or is shut down)
    assert sent(replacement, collection) == ["test_a.py::test_4", "test_a.py::test_5"]
    assert list(sched.workqueue) == ["test_a.py::test_3"]


def test_scheduler_has_every_member_of_xdists_scheduler_protocol() -> None:
    protocol = pytest.importorskip("xdist.scheduler.protocol").Scheduling
    members = {name for name in vars(protocol) if not name.startswith("_")}
    assert members and not {name for name in members if not hasattr(QuaeroScheduling, name)}


@pytest.mark.parametrize(("fallback", "scope"), [
    ("load", "tests/test_x.py::TestA::test_1"),
    ("loadscope", "tests/test_x.py::TestA"),
    ("loadfile", "tests/test_x.py"),
])
def test_scheduler_groups_other_tests_as_the_dist_mode_does(fallback: str, scope: str) -> None:
    sched, _, _ = scheduler([], fallback)
    assert sched.scope_of("tests/test_x.py::TestA::test_1") == scope
    assert sched.scope_of("quaero[heavy]::throughput") == "quaero[heavy]"


# ---------------------------------------------------------------- merging shard results


def shard(worker: str, start: float, seconds: float, *, busy: int = 0, duplicates: int = 0) -> RunResult:
    result = RunResult(scenario="tiny", parents=2, children_per_parent=5, run_id=f"run-{worker}",
                       settings={"workers": 2, "queue_name": f"quaero_jobs_{worker}_abc", "stagger": 0.1},
                       started_wall=start, execution_time=seconds, total_duration=seconds + 0.1,
                       messages_enqueued=10, jobs_completed=10, children_found=10,
                       duplicate_completions=duplicates,
                       retry={"queue_delete": {"operations": 10, "attempts": 10 + busy, "busy_events": busy,
                                               "codes": {"SQLITE_BUSY": busy} if busy else {}}},
                       integrity={"parents_expected": 2, "children_expected": 10, "parents_ok": 2, "children_ok": 10,
                                  "orphans": 0, "missing_parents": [], "integrity_pct": 100.0},
                       timeline=[{"phase": "initialization", "label": "init", "offset": 0.0},
                                 {"phase": "pool_started", "label": "pool", "offset": 0.1},
                                 {"phase": "jobs_completed", "label": "done", "offset": seconds}],
                       queue_samples=[[0.2, 10, 10, 0], [seconds, 0, 0, 0]],
                       workers=[WorkerRecord(0, "JobWorker-1", start, 0.1, seconds, 0.5, 5),
                                WorkerRecord(1, "JobWorker-2", start, 0.2, seconds, 0.5, 5)])
    result.extra["shared_db"] = {"worker": worker, "queue": result.settings["queue_name"], "base_queue": "quaero_jobs"}
    return result


def test_merged_counts_add_up_and_time_spans_all_shards() -> None:
    merged = merge_results([shard("gw1", 101.0, 2.0, busy=3), shard("gw0", 100.0, 2.0, duplicates=1)],
                           shared_path="/x/shared.db")
    assert (merged.total_jobs, merged.jobs_completed, merged.messages_enqueued) == (20, 20, 20)
    assert merged.busy_errors == 3 and merged.duplicate_completions == 1
    assert merged.execution_time == pytest.approx(3.0)  # 100.0 .. 103.0
    assert merged.hierarchy_integrity == 100.0 and merged.integrity["parents_expected"] == 4
    assert [w.name for w in merged.workers] == ["gw0/JobWorker-1", "gw0/JobWorker-2", "gw1/JobWorker-1",
                                                "gw1/JobWorker-2"]
    assert merged.workers[2].start_offset == pytest.approx(1.1)  # gw1 started a second later
    assert merged.settings["queue_name"] == "quaero_jobs_<worker>" and merged.db_path == "/x/shared.db"
    # both queues' lengths add up while both runs are going
    assert max(sample[1] for sample in merged.queue_samples) == 20
    info = merged.extra["shared_db"]
    assert [s["worker"] for s in info["shards"]] == ["gw0", "gw1"] and info["merged"] is True


def test_overlap_is_measured_and_fails_when_the_pools_never_met() -> None:
    together = overlap_verdict(merge_results([shard("gw0", 100.0, 2.0), shard("gw1", 100.5, 2.0)], shared_path="s"))
    # pools ran 100.1-102.0 and 100.6-102.5: together 1.4s of 2.4s
    assert together.passed and together.value == pytest.approx(1.4)
    assert together.measured.startswith("1.40s of 2.40s (58%)")
    apart = overlap_verdict(merge_results([shard("gw0", 100.0, 2.0), shard("gw1", 110.0, 2.0)], shared_path="s"))
    assert not apart.passed and apart.value == 0
    assert "never ran at the same time" in apart.detail


def test_merging_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        merge_results([], shared_path="s")

