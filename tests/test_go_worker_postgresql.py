"""The reference Go worker (examples/go_goqite) on the PostgreSQL backend (issue 17): goqite v0.4.0's
PostgreSQL flavour over pgx v5's database/sql driver, given the run's DSN (its own schema on the
search_path) by the plugin. Skipped without a Go toolchain or the postgresql extra."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pg_support
import pytest
from pg_support import needs_postgresql

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import external, run  # noqa: F401
from pytest_quaero.core.gobuild import resolve_command

pytestmark = [
    pytest.mark.slow,
    needs_postgresql,
    pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain on PATH (the reference worker is Go)"),
]

pg_server = pg_support.pg_server  # the shared fixture: in-process runs use this very server

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
#: timing criteria loosened so a busy shared machine cannot fail them; counting criteria stay strict
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
MODULE = Path(__file__).resolve().parent.parent / "examples" / "go_goqite"


@pytest.fixture(scope="module")
def go_worker() -> str:
    """The built binary (the first build downloads goqite, pgx and modernc.org/sqlite: about two minutes)."""
    return resolve_command(str(MODULE))[0]


def test_light_passes_on_postgresql_with_the_go_worker(pytester: pytest.Pytester, go_worker: str,
                                                        pg_server: Any) -> None:
    out = pytester.path / "out.json"
    result = pytester.runpytest(*BASE, *RELAXED, "--quaero-backend=postgresql", "--quaero-scenario=light",
                                f"--quaero-worker-command={go_worker}", f"--quaero-json={out}")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines(["*Lock Errors*0*= 0*PASS*"])
    run_result = json.loads(out.read_text())["results"][0]
    assert run_result["settings"]["backend"] == "postgresql"
    assert [worker["name"] for worker in run_result["workers"]] == ["go-1", "go-2"]
    assert run_result["jobs_completed"] == run_result["parents"] * run_result["children_per_parent"] == 100
    hello = run_result["extra"]["pool"]["hello"]
    assert hello["language"] == "go" and hello["backend"] == "postgresql" and "sqlite_version" not in hello
    assert hello["libraries"] == {"maragu.dev/goqite": "v0.4.0", "github.com/jackc/pgx/v5": "v5.13.0"}
    info = run_result["extra"]["postgresql"]
    assert hello["server_version"] == info["server_version"]
    # the Go connections run with what the plugin's own do, read back by each side from its server:
    # lock_timeout from --quaero-busy-timeout, synchronous_commit from --quaero-synchronous, the run's schema
    assert hello["pragmas"] == run_result["pragmas"] == info["session"]
    assert hello["pragmas"]["search_path"] == info["schema"] and hello["pragmas"]["lock_timeout_ms"] == 10_000
    assert info["stats"]["tables"]["goqite"]["rows_deleted"] == 100  # the server's count of the Go worker's deletes
    # the gated server counts see the Go worker's writes: the same work per job as the built-in workers do
    metrics = run_result["metrics"]
    assert (metrics["server_rows_inserted_per_job"], metrics["server_rows_updated_per_job"],
            metrics["server_rows_deleted_per_job"]) == (2.05, 4.0, 1.0)
    assert info["stats"]["connections_still_open"] == 0


def test_the_go_postgresql_tests_run_against_the_sessions_server(pg_server: Any) -> None:
    """``go test`` skips its PostgreSQL tests without QUAERO_TEST_PG_DSN; here they get a server."""
    result = subprocess.run(["go", "test", "-count=1", "-v", "-run", "Postgres", "./..."], cwd=MODULE,
                            env={**os.environ, "QUAERO_TEST_PG_DSN": pg_server.dsn},
                            capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "--- SKIP" not in output and output.count("--- PASS: TestPostgres") >= 6, output[-4000:]
