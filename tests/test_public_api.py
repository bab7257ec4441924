"""The public API a conftest uses: ``from pytest_quaero import ...``, and ``pytest_quaero.connect``."""

from __future__ import annotations

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
    from pytest_quaero.core import observe

    with observe.observing() as log:
        conn = connect(str(tmp_path) + "/x.db", Settings())
        conn.close()
    conn = connect(str(tmp_path) + "/y.db", Settings())
    conn.close()
    assert log.summary()["opened"] == 1
    assert log.summary()["by_origin"] == {"user": 1}


def test_everything_but_html_works_without_pytest_html(pytester: pytest.Pytester) -> None:
    """pytest-html is an optional extra: blocked, every scenario still runs and both report files are written."""
    result = pytester.runpytest_subprocess(
        *BASE, "-p", "no:html", "--quaero-scenario=light", *FAST, "--quaero-threshold=stagger_tolerance=400ms",
        "--quaero-threshold=min_throughput=1", "--quaero-report=r.md", "--quaero-json=r.json",
    )
    result.assert_outcomes(passed=8)
    assert (pytester.path / "r.md").read_text().startswith("#")
    assert '"schema_version"' in (pytester.path / "r.json").read_text()
    assert "--html" not in pytester.runpytest_subprocess("-p", "no:html", "--help").stdout.str()
