"""The pytest_quaero_* hooks end to end (pytester), in thread and process worker mode.

Every conftest below is a real user's conftest: its hooks are found by pytest, and
in process mode by the spawned workers, which import the file again.
"""

from __future__ import annotations

import pickle
import re
import sqlite3
import textwrap
from pathlib import Path

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import extension, items, plugin  # noqa: F401
from pytest_quaero.core import criteria, harness, pool, protocols, run  # noqa: F401
from pytest_quaero.core.criteria import CRITERIA
from pytest_quaero.core.protocols import ProtocolError, check_queue, check_store
from pytest_quaero.core.queue import Message, QueueCounts
from pytest_quaero.spawned import PluginRef, WorkerHooks
from pytest_quaero.spawned import load_plugin as _load
from pytest_quaero.spawned import ref_for as _ref_for

FAST = ("--quaero-job-time=1ms", "--quaero-stagger=100ms", "--quaero-poll-interval=50ms")
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
KEYS = [criterion.key for criterion in CRITERIA]

#: a small scenario of the user's own, so most runs below take well under a second
TINY = """
from pytest_quaero.core.scenarios import Scenario

def pytest_quaero_scenarios():
    return [Scenario("tiny", parents=2, children=5, time_limit=60.0)]
"""


def run_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE, *FAST, *RELAXED, *args)


def assert_usage_error(result: pytest.RunResult, *fragments: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


# ---------------------------------------------------------------- pytest_quaero_scenarios


def test_a_scenario_from_a_conftest_runs_as_items(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(TINY)
    result = run_pytest(pytester, "--quaero-scenario=tiny", "-v")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines([f"quaero[[]tiny[]]::{key} PASSED*" for key in KEYS])
    result.stdout.fnmatch_lines(["quaero[[]tiny[]] 2 x 5 = 10 jobs, 2 thread workers: PASS*"])


def test_an_unknown_scenario_lists_the_added_ones(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(TINY)
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=huge"), "--quaero-scenario='huge'",
                       "unknown scenario 'huge'", "light, medium, heavy, stress, explore, tiny")


def test_a_marker_may_name_an_added_scenario(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(TINY)
    pytester.makepyfile(test_it="""
        import pytest

        @pytest.mark.quaero_scenario("tiny")
        def test_tiny(quaero_run):
            result = quaero_run()
            assert (result.scenario, result.jobs_completed) == ("tiny", 10)
        """)
    run_pytest(pytester).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ('return [Scenario("light", 1, 1)]', ("scenario 'light' is already defined by the built-in scenarios",)),
        ('return [Scenario("Big Run", 1, 1)]', ("scenario name 'Big Run' is not allowed",)),
        ('return ["tiny"]', ("returned 'tiny'", "pytest_quaero.Scenario")),
        ('return {"tiny": 1}', ("returned dict", "return a list")),
    ],
)
def test_a_bad_scenario_hook_is_a_usage_error_naming_it(pytester: pytest.Pytester, body: str,
                                                       fragments: tuple[str, ...]) -> None:
    pytester.makeconftest(f"""
from pytest_quaero.core.scenarios import Scenario

def pytest_quaero_scenarios():
    {body}
""")
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=light"), "pytest_quaero_scenarios in ",
                       "conftest.py", *fragments)


# ---------------------------------------------------------------- pytest_quaero_handle_job

HANDLER = TINY + """
import os

def pytest_quaero_handle_job(job, context):
    # one line per job, in a file of the run's own folder: proof the hook did the work
    with open(os.path.join(os.path.dirname(context.db_path), "handled.txt"), "a") as handle:
        handle.write(f"{job.job_id} {context.worker} {os.getpid()}\\n")
    return True
"""


@pytest.mark.parametrize("mode", ["thread", pytest.param("process", marks=pytest.mark.slow)])
def test_the_handler_hook_replaces_the_simulated_work(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makeconftest(HANDLER)
    db_path = pytester.mkdir("kept") / "run.db"
    # 5s of simulated work per job would take 25s: the run is quick only if the hook replaced it
    result = run_pytest(pytester, "--quaero-scenario=tiny", f"--quaero-worker-mode={mode}",
                        "--quaero-job-time=5s", f"--quaero-db={db_path}")
    result.assert_outcomes(passed=10)
    lines = (db_path.parent / "handled.txt").read_text().split()
    jobs, pids = lines[0::3], set(lines[2::3])
    assert sorted(set(jobs)) == sorted(jobs) and len(jobs) == 10
    # thread mode: the pytest process itself; process mode: spawned children, never it
    import os

    assert (pids == {str(os.getpid())}) == (mode == "thread"), pids
    summary = [line for line in result.outlines if line.startswith("quaero[tiny]")][-1]
    seconds = float(summary.split(" jobs in ")[1].split("s,")[0])
    assert seconds < 5, summary


def test_a_handler_that_raises_fails_the_job(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(TINY + """
def pytest_quaero_handle_job(job, context):
    if job.job_id.endswith("-child-1-1"):
        raise RuntimeError("cannot fetch page 1")
    return True
""")
    result = run_pytest(pytester, "--quaero-scenario=tiny", "--quaero-visibility-timeout=100ms", "-rf")
    # redelivered up to max_receive (3), then failed for good: 9/10 completed is below 95%
    result.stdout.fnmatch_lines(["quaero[[]tiny[]] Job Completion Rate: measured 90.0% (9/10), required >= 95% "
                                 "(1 failed)"])
    result.assert_outcomes(passed=9, failed=1)


# ---------------------------------------------------------------- pytest_quaero_make_queue / _make_store

#: a queue that is not goqite at all: its own table, claimed with one UPDATE ... RETURNING
OWN_QUEUE = TINY + '''
import sqlite3, time
from pytest_quaero.core import db
from pytest_quaero.core.queue import Message, QueueCounts

class OwnQueue:
    def __init__(self, settings, db_path):
        self.conn = db.connect(db_path, settings)
        self.conn.execute("create table if not exists own_queue (id integer primary key autoincrement, "
                          "body blob, visible_at real, received integer default 0)")
        self.vt, self.max = settings.visibility_timeout, settings.max_receive

    def send(self, body):
        return str(self.conn.execute("insert into own_queue (body, visible_at) values (?, 0)", (body,)).lastrowid)

    def receive(self):
        rows = self.conn.execute(
            "update own_queue set visible_at = ?, received = received + 1 where id = (select id from own_queue "
            "where visible_at <= ? and received < ? order by id limit 1) returning id, body, received",
            (time.time() + self.vt, time.time(), self.max)).fetchall()
        return Message(str(rows[0][0]), bytes(rows[0][1]), rows[0][2]) if rows else None

    def delete(self, message_id):
        DELETE_SQL = "delete from own_queue where id = ?"
        return self.conn.execute(DELETE_SQL, (int(message_id),)).rowcount == 1

    def counts(self):
        total, visible, dead = self.conn.execute(
            "select count(*), coalesce(sum(visible_at <= ? and received < ?), 0), "
            "coalesce(sum(received >= ? and visible_at <= ?), 0) from own_queue",
            (time.time(), self.max, self.max, time.time())).fetchone()
        return QueueCounts(total, visible, total - visible - dead, dead)

    def close(self):
        self.conn.close()

def pytest_quaero_make_queue(settings, db_path):
    return OwnQueue(settings, db_path)
'''


def _kept(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    # The inner run has closed every connection: reading the kept file now is safe.
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("mode", ["thread", pytest.param("process", marks=pytest.mark.slow)])
def test_a_queue_of_ones_own_carries_the_whole_run(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makeconftest(OWN_QUEUE)
    db_path = pytester.path / "run.db"
    result = run_pytest(pytester, "--quaero-scenario=tiny", f"--quaero-worker-mode={mode}", f"--quaero-db={db_path}")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["*Queue Deletion Success Rate*100.0% (10/10 deleted)*PASS"])
    assert _kept(db_path, "select seq from sqlite_sequence where name = 'own_queue'") == [(10,)]
    assert _kept(db_path, "select count(*) from own_queue") == [(0,)]
    assert _kept(db_path, "select count(*) from goqite") == [(0,)]  # the built-in queue never saw a job
    assert _kept(db_path, "select count(*) from crawl_jobs where status = 'completed'") == [(12,)]


def test_the_run_watches_the_own_queue_so_undeleted_messages_fail(pytester: pytest.Pytester) -> None:
    # the same queue with an ack that acknowledges nothing: the drain must notice
    pytester.makeconftest(OWN_QUEUE.replace('"delete from own_queue where id = ?"',
                                            '"select ? where 0"').replace(".rowcount == 1", " is not None"))
    result = run_pytest(pytester, "--quaero-scenario=tiny", "-rf")
    result.stdout.fnmatch_lines(["quaero[[]tiny[]] Queue Deletion Success Rate: measured 0.0% (0/10 deleted), "
                                 "required = 100% (10 messages left undeleted)"])
    result.assert_outcomes(passed=9, failed=1)


def test_a_store_of_ones_own_on_its_own_connection(pytester: pytest.Pytester) -> None:
    # A JobStore on a connection the queue does not share: child row and message are
    # then two transactions, and the run must still come out whole.
    pytester.makeconftest(TINY + """
from pytest_quaero.core import db
from pytest_quaero.core.store import JobStore

MADE = []

class CountingStore(JobStore):
    def close(self):
        MADE.append(1)
        self.conn.close()

def pytest_quaero_make_store(settings, db_path):
    return CountingStore(db.connect(db_path, settings), begin_immediate=settings.begin_immediate)

def pytest_quaero_result(result):
    started = sum(1 for worker in result.workers if worker.start_offset is not None)
    print(f"stores closed: {len(MADE)}, workers started: {started}")
""")
    result = run_pytest(pytester, "--quaero-scenario=tiny", "-s")
    result.assert_outcomes(passed=10)
    line = next(line for line in result.outlines if "stores closed: " in line)
    closed, started = (int(n) for n in re.findall(r"\d+", line.split("stores closed: ")[1]))
    # preflight 1 + 2 producers + each worker that got past its stagger; no monitor store,
    # since the queue is the built-in one; every store made was closed
    assert started >= 1 and closed == 3 + started, line


def test_a_queue_missing_methods_is_one_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(TINY + """
class HalfQueue:
    def send(self, body, priority):
        return "m1"

def pytest_quaero_make_queue(settings, db_path):
    return HalfQueue()
""")
    result = run_pytest(pytester, "--quaero-scenario=tiny")
    # reported once, on the scenario's first item; the others are skipped as not measured
    result.assert_outcomes(errors=1, skipped=9)
    text = result.stdout.str()
    # once in the error report (the short summary line may repeat it, wide terminals untruncated)
    reported = [line for line in result.outlines if "which is not a usable queue" in line]
    assert len([line for line in reported if not line.startswith("ERROR ")]) == 1
    assert "returned HalfQueue (from " in text and "which is not a usable queue" in text
    assert "missing receive() -> Message | None" in text and "missing delete(message_id: str) -> bool" in text
    assert "missing counts() -> QueueCounts" in text and "send(body, priority) cannot be called as send(body" in text
    assert "Traceback" not in text


# ---------------------------------------------------------------- pytest_quaero_criteria / _result

CRITERIA_CONFTEST = TINY + """
from pytest_quaero.core.criteria import Criterion, Verdict

def _p95(result, thresholds):
    return Verdict("p95_processing", "p95 Processing Time", f"{result.p95 * 1000:.1f}ms", "< 10s", result.p95 < 10)

def _impossible(result, thresholds):
    return Verdict("all_jobs_twice", "Every Job Done Twice", str(result.duplicate_completions),
                   f">= {result.total_jobs}", False)

def _broken(result, thresholds):
    raise KeyError("no such metric")

def pytest_quaero_criteria(scenario, result):
    declared = [Criterion("p95_processing", "p95 Processing Time", _p95),
                Criterion("all_jobs_twice", "Every Job Done Twice", _impossible),
                Criterion("broken_judge", "Broken Judge", _broken)]
    if result is not None:
        declared.append(Verdict("late_verdict", "Known Only After the Run", "1", "1", True))
    return declared
"""


def test_criteria_from_the_hook_are_items_and_can_fail(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CRITERIA_CONFTEST)
    result = run_pytest(pytester, "--quaero-scenario=tiny", "-v")
    result.assert_outcomes(passed=11, failed=2)
    result.stdout.fnmatch_lines([
        "quaero[[]tiny[]]::p95_processing PASSED*",
        "quaero[[]tiny[]]::all_jobs_twice FAILED*",
        "quaero[[]tiny[]]::broken_judge FAILED*",
    ])
    text = result.stdout.str()
    assert "Every Job Done Twice: measured 0, required >= 10" in text
    assert "Broken Judge: measured judge raised, required a verdict (KeyError: 'no such metric')" in text
    # the verdict returned with the result has no item but is in the run's table
    result.stdout.fnmatch_lines(["  Known Only After the Run*1*1*PASS"])


def test_a_criterion_key_clash_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(TINY + """
from pytest_quaero.core.criteria import Criterion

def pytest_quaero_criteria(scenario, result):
    return [Criterion("throughput", "Mine", lambda r, t: None)]
""")
    result = run_pytest(pytester, "--quaero-scenario=tiny")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "criterion key 'throughput' is already used" in result.stderr.str() + result.stdout.str()


def test_the_result_hook_sees_every_judged_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(TINY + """
SEEN = []

def pytest_quaero_result(result):
    SEEN.append((result.scenario, result.passed, len(result.verdicts)))

def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"seen: {SEEN}")
""")
    pytester.makepyfile(test_it="""
        def test_run(quaero_run):
            assert quaero_run("tiny").jobs_completed == 10
        """)
    result = run_pytest(pytester, "--quaero-scenario=tiny")
    result.assert_outcomes(passed=11)
    result.stdout.fnmatch_lines(["seen: [[]('tiny', True, 10), ('tiny', True, 10)[]]"])


# ---------------------------------------------------------------- folder scope (item.ihook)


def test_a_conftest_applies_to_its_own_folder_only(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(TINY)
    mine = pytester.mkdir("mine")
    (mine / "conftest.py").write_text(textwrap.dedent("""
        import os

        def pytest_quaero_handle_job(job, context):
            with open(os.path.join(os.path.dirname(context.db_path), "mine.txt"), "a") as handle:
                handle.write(job.job_id + "\\n")
            return True
        """))
    test_code = """
        import os

        def test_run(quaero_run):
            result = quaero_run("tiny")
            marker = os.path.join(os.path.dirname(result.db_path), "mine.txt")
            print(os.path.basename(os.path.dirname(__file__)), os.path.exists(marker))
        """
    (mine / "test_mine.py").write_text(textwrap.dedent(test_code))
    other = pytester.mkdir("other")
    (other / "test_other.py").write_text(textwrap.dedent(test_code))
    result = run_pytest(pytester, "-s")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mine True*"])
    result.stdout.fnmatch_lines(["*other False*"])


# ---------------------------------------------------------------- the contract, directly


class _Queue:
    def send(self, body: bytes) -> str:
        return "m"

    def receive(self) -> Message | None:
        return None

    def delete(self, message_id: str) -> bool:
        return True

    def counts(self) -> QueueCounts:
        return QueueCounts(0, 0, 0, 0)


def test_check_queue_accepts_the_contract_and_names_each_gap() -> None:
    check_queue(_Queue())
    with pytest.raises(ProtocolError, match=r"returned None; it must return a queue object"):
        check_queue(None)

    class NoCounts(_Queue):
        counts = None  # type: ignore[assignment]

    with pytest.raises(ProtocolError) as excinfo:
        check_queue(NoCounts(), origin="my_hook")
    assert str(excinfo.value).startswith("my_hook returned ")
    assert "missing counts() -> QueueCounts" in str(excinfo.value)
    assert "send" not in str(excinfo.value).split("usable queue:")[1]


def test_check_store_names_a_method_that_cannot_take_the_harness_arguments() -> None:
    from pytest_quaero.core.store import JobStore

    check_store(JobStore(sqlite3.connect(":memory:")))

    class OldStore(JobStore):
        def finish_child(self, job_id: str) -> bool:  # type: ignore[override]
            return True

    with pytest.raises(ProtocolError, match=r"finish_child\(job_id\) cannot be called as finish_child\(job_id, "
                                            r"parent_id, \*, failed=False, error=''\)"):
        check_store(OldStore(sqlite3.connect(":memory:")))


def test_worker_hooks_for_thread_mode_refuse_to_be_pickled() -> None:
    with pytest.raises(pickle.PicklingError, match="resolved for thread mode"):
        pickle.dumps(WorkerHooks({}, None))
    copy = pickle.loads(pickle.dumps(WorkerHooks({"x": print}, ())))
    assert copy.refs == () and copy._callers is None


def test_a_plugin_object_that_cannot_be_pickled_is_named() -> None:
    class Local:  # defined in a function: pickle cannot find it again
        pass

    with pytest.raises(ProtocolError, match=r"plugin 'mine' \(.*Local\) .* cannot be sent to a spawned worker"):
        _ref_for("mine", Local())


def test_a_conftest_shadowed_on_sys_path_is_loaded_by_file(tmp_path: Path) -> None:
    # 'conftest' imports as this repository's tests/conftest.py here, not the file meant.
    hooks = tmp_path / "conftest.py"
    hooks.write_text("def pytest_quaero_handle_job(job, context):\n    return 'from tmp'\n")
    module = _load(PluginRef("c", module="conftest", path=str(hooks)))
    assert Path(module.__file__) == hooks and module.pytest_quaero_handle_job(None, None) == "from tmp"
    assert _load(PluginRef("c", module="conftest", path=str(hooks))) is module
