"""The plugin end to end, with pytester: options, items, summary, usage errors, fixtures, marker, --quaero-db."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

# Imported here, before pytester's first in-process run, so the runs below reuse these
# modules instead of importing (and assertion-rewriting) the plugin afresh each time.
from pytest_quaero import fixtures, items, plugin  # noqa: F401
from pytest_quaero.core import criteria, db, harness, metrics, pool, queue, run, store  # noqa: F401
from pytest_quaero.core.criteria import CRITERIA

#: keeps every run on a built-in scenario short: no simulated work to speak of, short stagger and polling
FAST = ("--quaero-job-time=1ms", "--quaero-stagger=100ms", "--quaero-poll-interval=50ms")
#: timing criteria loosened so a busy shared machine cannot fail them; counting criteria stay strict.
#: 2s, not 400ms: another xdist worker's load delayed a worker thread's start by 450-550ms on CI.
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
#: hypothesis' pytest plugin re-imports all of hypothesis in every in-process run: seconds each
BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
KEYS = [criterion.key for criterion in CRITERIA]


def run_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE, *args)


def ids(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith("quaero[")]


def assert_usage_error(result: pytest.RunResult, *fragments: str) -> str:
    """Exit 4, one ``ERROR:`` line holding every fragment, and no traceback."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    everything = result.stdout.str() + result.stderr.str()
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert "Traceback" not in everything
    assert "raise " not in everything
    return errors[0]


# ---------------------------------------------------------------- items in an empty project


def test_light_in_an_empty_project(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-scenario=light", "-v", *FAST, *RELAXED)
    result.assert_outcomes(passed=10)
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"quaero[[]light[]]::{key} PASSED*" for key in KEYS])
    result.stdout.fnmatch_lines(["*collected 10 items"])
    result.stdout.fnmatch_lines(["quaero: scenarios light; 2 workers (thread), stagger 100ms, *"])


def test_terminal_summary_table(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-scenario=light", *FAST, *RELAXED)
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines([
        "*quaero load test results*",
        "quaero[[]light[]] 5 x 20 = 100 jobs, 2 thread workers: PASS (100/100 jobs in *",
        "  criterion * measured * required * status",
        "  Execution Time *< 5m * PASS",
        "  SQLITE_BUSY Errors * 0 * = 0 * PASS",
        "  Queue Deletion Success Rate * 100.0% (100/100 deleted) * = 100% * PASS",
        "  Hierarchy Integrity * 100.0% * = 100% * PASS",
        "  Job Completion Rate * 100.0% (100/100) * >= 95% * PASS",
        "  Worker Staggering * gaps *ms * 100ms ± 2s between worker starts * PASS",
        "  Throughput * jobs/sec * >= 1 jobs/sec * PASS",
        "  Jobs Processed Twice * 0 * = 0 * PASS",
    ])
    # a passing run on a temporary file tidies its database away
    assert "database kept" not in result.stdout.str()
    assert list(pytester.path.rglob("quaero.db")) == []


def test_collect_only_lists_the_items(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-scenario=light", "--co", "-q")
    assert result.ret == 0
    assert ids(result) == [f"quaero[light]::{key}" for key in KEYS]


@pytest.mark.parametrize(
    ("choice", "scenarios"),
    [
        ("light,medium", ["light", "medium"]),
        ("medium, light", ["medium", "light"]),
        ("light,light", ["light"]),
        ("all", ["light", "medium", "heavy", "stress", "explore"]),
        ("heavy,all", ["heavy", "light", "medium", "stress", "explore"]),
    ],
)
def test_comma_lists_and_all(pytester: pytest.Pytester, choice: str, scenarios: list[str]) -> None:
    result = run_pytest(pytester, f"--quaero-scenario={choice}", "--co", "-q")
    assert result.ret == 0
    assert ids(result) == [f"quaero[{s}]::{key}" for s in scenarios for key in KEYS]


def test_items_join_a_projects_own_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="def test_mine():\n    pass\n")
    result = run_pytest(pytester, "--quaero-scenario=light", "--co", "-q")
    assert result.ret == 0
    assert "test_mine.py::test_mine" in result.outlines
    assert len(ids(result)) == 10
    # without --quaero-scenario the plugin adds nothing
    plain = run_pytest(pytester, "--co", "-q")
    assert ids(plain) == []
    plain.stdout.fnmatch_lines(["1 test collected*"])


def test_k_selects_criterion_items(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-scenario=light", "-k", "throughput or busy", "-v", *FAST, *RELAXED)
    result.assert_outcomes(passed=2, deselected=8)
    result.stdout.fnmatch_lines(["*quaero[[]light[]]::sqlite_busy_errors PASSED*",
                                 "*quaero[[]light[]]::throughput PASSED*"])
    collected = run_pytest(pytester, "--quaero-scenario=light,medium", "-k", "medium and deletion", "--co", "-q")
    assert ids(collected) == ["quaero[medium]::queue_deletion"]


@pytest.mark.slow
def test_light_and_medium_run(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-scenario=light,medium", *FAST, *RELAXED)
    result.assert_outcomes(passed=20)
    result.stdout.fnmatch_lines(["quaero[[]light[]] 5 x 20 = 100 jobs*PASS*",
                                 "quaero[[]medium[]] 10 x 50 = 500 jobs*PASS*"])


def test_process_workers(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-scenario=light", "--quaero-worker-mode=process", *FAST, *RELAXED)
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["quaero[[]light[]] 5 x 20 = 100 jobs, 2 process workers: PASS*"])


# ---------------------------------------------------------------- a failing criterion


def test_failing_criterion(pytester: pytest.Pytester) -> None:
    result = run_pytest(pytester, "--quaero-scenario=light", *FAST, *RELAXED,
                        "--quaero-threshold=light.min_throughput=100000")  # the scenario's own beats "*"
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=9, failed=1)
    output = result.stdout.str()
    assert re.search(r"quaero\[light\] Throughput: measured [\d.]+ jobs/sec, required >= 100000 jobs/sec", output)
    result.stdout.fnmatch_lines(["FAILED quaero[[]light[]]::throughput*"])
    result.stdout.fnmatch_lines(["  Throughput * >= 100000 jobs/sec * FAIL"])
    kept = re.findall(r"database kept: (\S+)", output)
    logs = re.findall(r"log kept: +(\S+)", output)
    assert kept and logs
    assert all(Path(p).is_file() for p in kept + logs)
    conn = sqlite3.connect(kept[0])
    try:
        assert conn.execute("select count(*) from crawl_jobs where job_type = 'crawler_url'").fetchone()[0] == 100
    finally:
        conn.close()
    assert "Scenario light" in Path(logs[0]).read_text()
    assert "Traceback" not in output


def test_threshold_from_ini_and_config(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nquaero_thresholds =\n    light.min_throughput = 100000\n")
    result = run_pytest(pytester, "--quaero-scenario=light", *FAST, *RELAXED[:1])
    result.assert_outcomes(passed=9, failed=1)
    pytester.makefile(".toml", quaero="[thresholds.light]\nmin_completion_rate = 100\nmin_throughput = 1\n")
    result = run_pytest(pytester, "--quaero-scenario=light", "--quaero-config=quaero.toml", *FAST, *RELAXED[:1])
    result.assert_outcomes(passed=10)  # the config file's threshold beats the ini's
    result.stdout.fnmatch_lines(["  Throughput * >= 1 jobs/sec * PASS"])


# ---------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--quaero-scenario=nope"], ["--quaero-scenario='nope'", "unknown scenario 'nope'", "light, medium, heavy"]),
        (["--quaero-scenario=light,nope"], ["unknown scenario 'nope'", "allowed"]),
        (["--quaero-scenario=light", "--quaero-workers=-1"],
         ["--quaero-workers=-1 (command line)", "allowed: a whole number >= 1"]),
        (["--quaero-scenario=light", "--quaero-stagger=fast"],
         ["--quaero-stagger=fast (command line)", "allowed: a duration such as 500ms"]),
        (["--quaero-workers=0"], ["--quaero-workers=0 (command line)"]),
        (["--quaero-scenario=light", "--quaero-worker-mode=fiber"], ["--quaero-worker-mode", "thread or process"]),
        (["--quaero-scenario=light", "--quaero-job-time=20ms..5ms"], ["--quaero-job-time", "low..high"]),
        (["--quaero-scenario=light", "--quaero-config=absent.toml"], ["--quaero-config=absent.toml", "no such file"]),
        (["--quaero-scenario=light", "--quaero-threshold=light.min_throughput=fast"],
         ["light.min_throughput", "'fast'", "allowed: jobs per second"]),
        (["--quaero-scenario=light", "--quaero-threshold=light.min_thruput=3"],
         ["unknown criterion threshold", "min_throughput"]),
        (["--quaero-scenario=light", "--quaero-threshold=huge.min_throughput=3"],
         ["'huge'", "unknown scenario", "light, medium, heavy"]),
        (["--quaero-scenario=light", "--quaero-threshold=min_throughput"], ["--quaero-threshold", "CRITERION = VALUE"]),
    ],
)
def test_command_line_usage_errors(pytester: pytest.Pytester, args: list[str], fragments: list[str]) -> None:
    assert_usage_error(run_pytest(pytester, *args), *fragments)


def test_env_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAERO_QUEUE_CONCURRENCY", "abc")
    assert_usage_error(
        run_pytest(pytester, "--quaero-scenario=light"),
        "QUAERO_QUEUE_CONCURRENCY=abc (environment)", "--quaero-workers", "allowed: a whole number >= 1",
    )


def test_env_is_used(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAERO_QUEUE_CONCURRENCY", "3")
    pytester.makeini("[pytest]\nquaero_workers = 4\n")
    # precedence seen from outside: the environment beats the ini file, the command line beats both
    header = run_pytest(pytester, "--quaero-scenario=light", "--co")
    header.stdout.fnmatch_lines(["quaero: scenarios light; 3 workers (thread)*"])
    cli = run_pytest(pytester, "--quaero-scenario=light", "--co", "--quaero-workers=5")
    cli.stdout.fnmatch_lines(["quaero: scenarios light; 5 workers (thread)*"])


def test_bad_ini_value(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nquaero_stagger = fast\n")
    assert_usage_error(
        run_pytest(pytester, "--quaero-scenario=light"),
        "quaero_stagger = fast (tox.ini)", "--quaero-stagger", "allowed: a duration",
    )


def test_ini_value_is_used(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nquaero_workers = 3\nquaero_stagger = 50ms\n")
    result = run_pytest(pytester, "--quaero-scenario=light", "--co")
    result.stdout.fnmatch_lines(["quaero: scenarios light; 3 workers (thread), stagger 50ms, *"])


def test_config_file_that_is_not_toml(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", quaero="queue:\n  concurrency: 2\n")
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=light", "--quaero-config=quaero.yaml"),
                       "--quaero-config=quaero.yaml", "not valid TOML")


def test_config_file_with_an_unknown_key(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", quaero="[queue]\nconcurency = 2\n")
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=light", "--quaero-config=quaero.toml"),
                       "--quaero-config=quaero.toml", "unknown key 'concurency' in [queue]", "concurrency")


def test_config_file_with_a_bad_value(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", quaero='[storage.sqlite]\nbusy_timeout_ms = "soon"\n')
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=light", "--quaero-config=quaero.toml"),
                       "busy_timeout_ms = soon in [storage.sqlite] of quaero.toml", "--quaero-busy-timeout")


def test_config_file_with_a_bad_threshold(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", quaero="[thresholds.light]\nmin_completion_rate = 150\n")
    assert_usage_error(run_pytest(pytester, "--quaero-scenario=light", "--quaero-config=quaero.toml"),
                       "light.min_completion_rate", "a percentage 0..100")


def test_quaeros_own_config_file_is_used(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", quaero=(
        '[queue]\nconcurrency = 3\npoll_interval = "50ms"\nvisibility_timeout = "5m"\nmax_receive = 3\n\n'
        '[storage]\ntype = "sqlite"\n\n'
        '[storage.sqlite]\nenable_fts5 = true\nenable_vector = true\nembedding_dimension = 768\n'
        'busy_timeout_ms = 10000\nwal_mode = true\ncache_size_mb = 64\n'
    ))
    result = run_pytest(pytester, "--quaero-scenario=light", "--quaero-config=quaero.toml", "--co")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["quaero: scenarios light; 3 workers (thread)*"])


def test_bad_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_m='import pytest\n\n@pytest.mark.quaero_scenario("nope")\ndef test_a():\n    pass\n')
    assert_usage_error(run_pytest(pytester), "@pytest.mark.quaero_scenario on test_m.py::test_a",
                       "unknown scenario 'nope'", "light, medium, heavy")


def test_bad_marker_setting_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_m=(
        "import pytest\n\n@pytest.mark.quaero_scenario(parents=3, children=7, stagger='fast')\n"
        "def test_a():\n    pass\n"
    ))
    assert_usage_error(run_pytest(pytester), "test_m.py::test_a", "--quaero-stagger", "allowed: a duration")


def test_marker_with_an_unknown_setting(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_m="import pytest\n\n@pytest.mark.quaero_scenario('light', wokers=2)\ndef test_a():\n    pass\n"
    )
    assert_usage_error(run_pytest(pytester), "unknown setting 'wokers'")


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_m="import pytest\n\n@pytest.mark.quaero_scenario('light')\ndef test_a():\n    pass\n")
    result = run_pytest(pytester, "--strict-markers")
    result.assert_outcomes(passed=1)
    markers = run_pytest(pytester, "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.quaero_scenario(*"])


# ---------------------------------------------------------------- fixtures and marker in a user's tests


def test_fixtures_in_a_users_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user='''
        import time

        def test_settings(quaero_settings):
            assert quaero_settings.workers == 3
            assert quaero_settings.sources["workers"] == "command line"

        def test_db(quaero_db):
            assert quaero_db.path.is_file()
            conn = quaero_db.connect()
            try:
                assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
                assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10000
                tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
                assert {"goqite", "crawl_jobs"} <= tables
            finally:
                conn.close()

        def test_queue(quaero_queue):
            first = quaero_queue.send(b"one")
            quaero_queue.send(b"two", priority=5)
            assert quaero_queue.receive().body == b"two"
            assert quaero_queue.receive().id == first
            assert quaero_queue.delete(first) is True
            assert quaero_queue.delete(first) is False

        def test_store(quaero_store, quaero_queue):
            quaero_store.save_parent("p", "parent", 1)
            quaero_store.create_child("c", "p", "http://x", enqueue=lambda: quaero_queue.send(b"c"))
            assert quaero_store.finish_child("c", "p") is True
            assert quaero_store.get("p")["status"] == "completed"
            assert len(quaero_queue) == 1

        def test_pool(quaero_pool, quaero_db):
            quaero_pool.start()
            deadline = time.monotonic() + 30
            started = set()
            while len(started) < 3 and time.monotonic() < deadline:
                started |= {e[1] for e in quaero_pool.poll_events() if e[0] == "started"}
                time.sleep(0.02)
            assert started == {0, 1, 2}
            assert quaero_pool.db_path == str(quaero_db.path)
    ''')
    result = run_pytest(pytester, "--quaero-workers=3", *FAST, "-v")
    result.assert_outcomes(passed=5)


def test_quaero_run_with_a_named_scenario_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user='''
        import pytest

        @pytest.mark.quaero_scenario("light")
        def test_light(quaero_run):
            result = quaero_run()
            assert result.scenario == "light"
            assert result.total_jobs == 100
            assert result.jobs_completed == 100
            assert result.verdicts and {v["criterion"] for v in result.verdicts} >= {"throughput", "completion_rate"}
            assert result.passed, result.verdicts
    ''')
    result = run_pytest(pytester, *FAST, *RELAXED)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*quaero load test results*", "quaero[[]light[]] 5 x 20 = 100 jobs*PASS*"])


def test_quaero_run_with_a_custom_tree_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user='''
        import pytest

        @pytest.mark.quaero_scenario(parents=3, children=7, workers=4)
        def test_custom(quaero_run):
            result = quaero_run()
            assert (result.parents, result.children_per_parent, result.total_jobs) == (3, 7, 21)
            assert result.settings["workers"] == 4
            assert len(result.workers) == 4
            assert result.jobs_completed == 21
            assert result.integrity["integrity_pct"] == 100.0

        def test_override_in_the_call(quaero_run):
            result = quaero_run("light", workers=1)
            assert result.scenario == "light" and result.settings["workers"] == 1
            assert result.jobs_completed == 100
    ''')
    result = run_pytest(pytester, *FAST, *RELAXED)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["quaero[[]custom[]] 3 x 7 = 21 jobs, 4 thread workers*"])


def test_quaero_run_failure_is_a_result_not_an_exception(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user='''
        def test_judged(quaero_run):
            result = quaero_run("light")
            failed = [v["criterion"] for v in result.verdicts if not v["passed"]]
            assert failed == ["throughput"]
            assert result.extra["kept"] is True
    ''')
    result = run_pytest(pytester, *FAST, *RELAXED, "--quaero-threshold=light.min_throughput=100000")
    result.assert_outcomes(passed=1)


# ---------------------------------------------------------------- --quaero-db


def test_quaero_db_keeps_the_file_and_refuses_leftovers(pytester: pytest.Pytester) -> None:
    kept = pytester.path / "kept.db"
    result = run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={kept}", *FAST, *RELAXED)
    result.assert_outcomes(passed=10)
    assert kept.is_file()
    result.stdout.fnmatch_lines([f"  database kept: {kept}"])
    conn = sqlite3.connect(kept)
    try:
        assert conn.execute("select count(*) from crawl_jobs where status = 'completed'").fetchone()[0] == 105
        assert conn.execute("select count(*) from goqite").fetchone()[0] == 0
        # a message some earlier run left behind
        conn.execute("insert into goqite (queue, body) values ('quaero_jobs', x'00')")
        conn.commit()
    finally:
        conn.close()
    again = run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={kept}", *FAST, *RELAXED)
    assert again.ret == pytest.ExitCode.TESTS_FAILED
    output = again.stdout.str()
    assert "already holds 1 messages from an earlier run" in output
    assert str(kept) in output
    assert "def _prepare" not in output  # a sentence, not a source listing
    assert "During handling" not in output
    again.assert_outcomes(errors=1, skipped=9)
    assert len([line for line in again.outlines if "could not run" in line and "already holds" in line]) >= 1


def test_quaero_db_from_env_on_a_second_clean_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = pytester.path / "env.db"
    monkeypatch.setenv("QUAERO_LOAD_DB", str(kept))
    for _ in range(2):
        result = run_pytest(pytester, "--quaero-scenario=light", *FAST, *RELAXED)
        result.assert_outcomes(passed=10)
    conn = sqlite3.connect(kept)
    try:
        assert conn.execute("select count(*) from crawl_jobs where job_type = 'parent'").fetchone()[0] == 10
    finally:
        conn.close()
