"""The public API a conftest uses: ``from pytest_quaero import ...``, and ``pytest_quaero.connect``."""

from __future__ import annotations

from pathlib import Path

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import plugin  # noqa: F401 - preloaded for pytester's in-process runs

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
FAST = ("--quaero-job-time=1ms", "--quaero-stagger=50ms", "--quaero-poll-interval=20ms")


def test_a_handler_connection_from_connect_is_observed_by_the_run(pytester: pytest.Pytester) -> None:
    """A job handler that opens its own connection through ``pytest_quaero.connect`` is seen by the
    run like the plugin's own connections: counted, with the pragmas read back from it."""
    pytester.makeconftest(
        """
        import threading
        from pytest_quaero import connect

        _local = threading.local()

        def pytest_quaero_handle_job(job, context):
            conn = getattr(_local, "conn", None)
            if conn is None:
                conn = _local.conn = connect(context.db_path, context.settings)
                conn.execute("create table if not exists seen (job_id text primary key)")
            conn.execute("insert or ignore into seen values (?)", (job.job_id,))
            return True
        """
    )
    pytester.makepyfile(
        test_handler_connection="""
        def test_handler_connection(quaero_run):
            result = quaero_run("light", parents=2, children=3, workers=2)
            connections = result.extra["connections"]
            # one per worker thread that got a job; the plugin's: workers, producers, monitor
            assert 1 <= connections["by_origin"]["user"] <= 2, connections
            assert connections["by_origin"]["plugin"] >= 3, connections
            assert connections["opened"] == sum(connections["by_origin"].values())
            (config,) = [c for c in connections["configurations"] if "user" in c["origins"]]
            # read back from the connection itself: the run's pragmas
            assert (config["busy_timeout_ms"], config["journal_mode"]) == (1234, "wal"), config
        """
    )
    result = pytester.runpytest(*BASE, *FAST, "--quaero-worker-mode=thread", "--quaero-busy-timeout=1234ms")
    result.assert_outcomes(passed=1)


def test_connections_outside_a_run_are_not_counted(tmp_path: object) -> None:
    from pytest_quaero import Settings, connect
    from pytest_quaero.core.instruments import instrumenting

    with instrumenting() as instruments:
        conn = connect(str(tmp_path) + "/x.db", Settings())
        conn.close()
    conn = connect(str(tmp_path) + "/y.db", Settings())
    conn.close()
    assert instruments.connection_summary()["opened"] == 1
    assert instruments.connection_summary()["by_origin"] == {"user": 1}


def test_everything_but_html_works_without_pytest_html(pytester: pytest.Pytester) -> None:
    """pytest-html is an optional extra: blocked, every scenario still runs and both report files are written."""
    result = pytester.runpytest_subprocess(
        *BASE, "-p", "no:html", "--quaero-scenario=light", *FAST, "--quaero-threshold=stagger_tolerance=2s",
        "--quaero-threshold=min_throughput=1", "--quaero-report=r.md", "--quaero-json=r.json",
    )
    result.assert_outcomes(passed=10)
    assert (pytester.path / "r.md").read_text().startswith("#")
    assert '"schema_version"' in (pytester.path / "r.json").read_text()
    assert "--html" not in pytester.runpytest_subprocess("-p", "no:html", "--help").stdout.str()


def test_a_lock_error_in_the_contract_check_is_one_sentence_naming_the_statement(pytester: pytest.Pytester) -> None:
    """A store that keeps a write transaction open on the shared connection, and a queue on a connection
    of its own: the queue's first write meets the store's lock while the plugin checks the pair."""
    pytester.makeconftest(
        """
        from pytest_quaero import JobStore, Queue, connect

        def pytest_quaero_make_store(settings, db_path, connection):
            conn = connection()
            conn.execute("BEGIN IMMEDIATE")  # never committed: the lock stays with this connection
            return JobStore(conn)

        def pytest_quaero_make_queue(settings, db_path):
            conn = connect(db_path, settings)
            conn.execute("BEGIN IMMEDIATE")
            return Queue(conn, settings.queue_name)
        """
    )
    result = pytester.runpytest(*BASE, *FAST, "--quaero-scenario=light", "--quaero-busy-timeout=50ms")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "Traceback" not in out and "raise " not in out
    line = next(line for line in result.outlines
                if "contract check on the run's database failed" in line and not line.startswith("ERROR "))
    assert "OperationalError: database is locked" in line
    assert "running 'BEGIN IMMEDIATE' on a connection with busy_timeout=50, journal_mode=wal" in line
    kept = line.split("database kept: ")[1].split(". ")[0]
    assert Path(kept).is_file()
    # said once, on one item; the scenario's other items are skipped as not measured
    reported = [line for line in result.outlines if "contract check on the run's database failed" in line]
    assert len([line for line in reported if not line.startswith("ERROR ")]) == 1  # not counting the summary
    result.assert_outcomes(errors=1, skipped=9)
