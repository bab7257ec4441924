"""The counted gate on PostgreSQL reads the server's own counters: rows inserted, updated and deleted
per job in the run's schema, whoever wrote them. A handler that writes through a connection the
plugin never sees is invisible to client-side counts, and caught by the server's."""

from __future__ import annotations

import json

import pg_support
import pytest
from pg_support import needs_postgresql

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import criteria, run  # noqa: F401

pytestmark = needs_postgresql
pg_server = pg_support.pg_server  # in-process runs use this very server

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
RUN = ("--quaero-backend=postgresql", "--quaero-scenario=light", "--quaero-job-time=1ms", "--quaero-stagger=50ms",
       "--quaero-poll-interval=20ms", "--quaero-threshold=stagger_tolerance=2s",
       "--quaero-threshold=min_throughput=1")
SERVER_METRICS = ("server_rows_inserted_per_job", "server_rows_updated_per_job", "server_rows_deleted_per_job")
#: a handler that stamps its job's row once more, through a psycopg connection of its own
SIDE_WRITER = """
import psycopg

def pytest_quaero_handle_job(job, context):
    with psycopg.connect(context.db_path, autocommit=True) as conn:
        conn.execute("update crawl_jobs set error = '' where id = %s", (job.job_id,))
    return None  # the default simulated work still runs
"""


def _gate_rows(pytester: pytest.Pytester) -> dict[str, dict]:  # type: ignore[type-arg]
    document = json.loads((pytester.path / "out.json").read_text())
    return {row["metric"]: row for row in document["results"][0]["extra"]["baseline"]["rows"]}


def test_server_counts_are_metrics_and_a_same_code_rerun_passes_the_gate(pytester: pytest.Pytester,
                                                                         pg_server: object) -> None:
    baseline = pytester.path / "baseline.json"
    saved = pytester.runpytest(*BASE, *RUN, f"--quaero-save-baseline={baseline}", "--quaero-json=first.json")
    saved.assert_outcomes(passed=11)
    metrics = json.loads((pytester.path / "first.json").read_text())["results"][0]["metrics"]
    # light: 5 parents and 100 children inserted, 100 messages sent, claimed, deleted
    assert metrics["server_rows_inserted_per_job"] == 2.05 and metrics["server_rows_deleted_per_job"] == 1.0
    assert metrics["server_rows_updated_per_job"] == 4.0  # claim, running, finished, the parent's progress
    entry = json.loads(baseline.read_text())
    assert "light-5x20@postgresql" in json.dumps(entry)  # never compared with a SQLite baseline of light

    again = pytester.runpytest(*BASE, *RUN, f"--quaero-baseline={baseline}", "--quaero-json=out.json")
    again.assert_outcomes(passed=11)
    rows = _gate_rows(pytester)
    for name in SERVER_METRICS:
        assert rows[name]["passed"] is True and rows[name]["limit"].endswith("(+0)"), rows[name]
    again.stdout.fnmatch_lines(["*server_rows_updated_per_job*4*4*+0.0%*PASS*"])


def test_a_write_no_client_trace_sees_is_caught_by_the_server(pytester: pytest.Pytester, pg_server: object) -> None:
    baseline = pytester.path / "baseline.json"
    pytester.runpytest(*BASE, *RUN, f"--quaero-save-baseline={baseline}").assert_outcomes(passed=11)
    pytester.makeconftest(SIDE_WRITER)
    result = pytester.runpytest(*BASE, *RUN, f"--quaero-baseline={baseline}", "--quaero-json=out.json")
    result.assert_outcomes(passed=10, failed=1)  # every criterion holds; the baseline gate fails
    rows = _gate_rows(pytester)
    updated = rows["server_rows_updated_per_job"]
    assert updated["passed"] is False and updated["now"] == updated["before"] + 1, updated
    assert "crawl_jobs: updated +1 per job" in updated["change"]
    # the plugin's own connections did exactly what they did before: only the server saw the extra write
    assert rows["statements_per_job"]["passed"] is True and rows["rows_changed_per_job"]["passed"] is True
    result.stdout.fnmatch_lines(["*server_rows_updated_per_job*4*5*+25.0%*FAIL*"])


def test_a_sqlite_comparison_has_no_server_rows(pytester: pytest.Pytester) -> None:
    args = ("--quaero-scenario=light", "--quaero-job-time=1ms", "--quaero-stagger=50ms",
            "--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
    baseline = pytester.path / "baseline.json"
    pytester.runpytest(*BASE, *args, f"--quaero-save-baseline={baseline}").assert_outcomes(passed=11)
    pytester.runpytest(*BASE, *args, f"--quaero-baseline={baseline}", "--quaero-json=out.json")
    rows = _gate_rows(pytester)
    assert "statements_per_job" in rows and not any(name.startswith("server_") for name in rows)
    assert "light-5x20" in baseline.read_text() and "light-5x20@" not in baseline.read_text()
