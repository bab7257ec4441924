"""The PostgreSQL backend through pytest: --quaero-backend and --quaero-dsn end to end, usage errors,
and two pytest-xdist workers on one server."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pg_support
import pytest
from pg_support import INSTALL_HINT, needs_postgresql

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import criteria, run  # noqa: F401
from pytest_quaero.core.criteria import CRITERIA

pg_server = pg_support.pg_server  # the shared fixture: in-process runs use this very server

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
#: timing criteria loosened so a busy shared machine cannot fail them; counting criteria stay strict
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
KEYS = [criterion.key for criterion in CRITERIA]
TWO_SCENARIOS = """
from pytest_quaero.core.scenarios import Scenario

def pytest_quaero_scenarios():
    return [Scenario("tiny", parents=2, children=5, time_limit=60.0),
            Scenario("small", parents=3, children=5, time_limit=60.0)]
"""


def _schemas(dsn: str) -> set[str]:
    import psycopg  # deferred: the extra's driver, absent where these tests skip

    with psycopg.connect(dsn) as conn:
        return {row[0] for row in conn.execute("select nspname from pg_namespace where nspname like 'quaero%'")}


def _usage_error(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr.str(), result.errlines
    return errors[0]


@needs_postgresql
def test_light_passes_on_the_embedded_server_and_leaves_nothing_behind(pytester: pytest.Pytester,
                                                                      pg_server: Any) -> None:
    before = _schemas(pg_server.dsn)
    out = pytester.path / "out.json"
    report = pytester.path / "report.md"
    result = pytester.runpytest(*BASE, *RELAXED, "--quaero-backend=postgresql", "--quaero-scenario=light", "-v",
                                f"--quaero-json={out}", f"--quaero-report={report}")
    result.assert_outcomes(passed=10)
    result.stdout.fnmatch_lines([f"quaero[[]light[]]::{key} PASSED*" for key in KEYS])
    result.stdout.fnmatch_lines(["*Lock Errors*0*= 0*PASS*"])  # the backend-neutral name
    result.stdout.fnmatch_lines(["quaero: scenarios light; *, postgresql (embedded server), lock_timeout 10000ms, *"])
    assert "journal WAL" not in result.stdout.str()
    assert "SQLITE_BUSY" not in result.stdout.str()
    run_result = json.loads(out.read_text())["results"][0]
    assert run_result["settings"]["backend"] == "postgresql"
    assert run_result["pragmas"]["isolation"] == "READ COMMITTED"  # read back from the server
    assert run_result["pragmas"]["lock_timeout_ms"] == 10_000
    info = run_result["extra"]["postgresql"]
    assert info["embedded"] and info["claim_check"]["ok"]
    # the server's own counters: one row per parent and child, one message per child, each deleted
    assert info["stats"]["tables"]["crawl_jobs"]["rows_inserted"] == 105
    assert info["stats"]["tables"]["goqite"]["rows_deleted"] == 100
    assert _schemas(pg_server.dsn) == before  # the run's schema was dropped, and nothing else
    markdown = report.read_text()
    assert re.search(r"^- \*\*Database:\*\* PostgreSQL \d+\.\d+, READ COMMITTED \(read back: lock_timeout=10000ms",
                     markdown, re.MULTILINE), markdown[:2000]
    assert "| **Lock Errors** | 0 |" in markdown and "PostgreSQL raised 0 lock errors" in markdown


@needs_postgresql
def test_a_dsn_runs_in_its_own_schema_and_hides_the_password(pytester: pytest.Pytester, pg_server: Any) -> None:
    import psycopg  # deferred: the extra's driver

    dsn = psycopg.conninfo.make_conninfo(pg_server.dsn, password="not-checked-by-trust-auth")
    out = pytester.path / "out.json"
    result = pytester.runpytest(*BASE, "--quaero-backend=postgresql", f"--quaero-dsn={dsn}",
                                "--quaero-scenario=light", "--quaero-job-time=1ms", "--quaero-stagger=100ms",
                                "--quaero-poll-interval=50ms", *RELAXED, f"--quaero-json={out}")
    result.assert_outcomes(passed=10)
    results = json.dumps(json.loads(out.read_text())["results"])  # (the session's argv is recorded as given)
    assert "not-checked-by-trust-auth" not in results and "not-checked-by-trust-auth" not in result.stdout.str()
    info = json.loads(results)[0]["extra"]["postgresql"]
    assert not info["embedded"] and re.fullmatch(r"quaero_[0-9a-f]{8}", info["schema"])


def test_the_backend_without_its_extra_is_a_usage_error_naming_pip(pytester: pytest.Pytester,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # what a machine without psycopg says (the check asks importlib for the modules)
    monkeypatch.setattr("pytest_quaero.core.postgresql.missing_extra",
                        lambda *, embedded: f"psycopg is not installed; run: {INSTALL_HINT}")
    error = _usage_error(pytester.runpytest(*BASE, "--quaero-backend=postgresql", "--quaero-scenario=light"))
    assert "--quaero-backend=postgresql (command line)" in error and INSTALL_HINT in error


@pytest.mark.parametrize(("args", "fragment"), [
    (("--quaero-dsn=postgresql://db/jobs",), "is given but the backend is sqlite (default)"),
    (("--quaero-backend=postgresql", "--quaero-dsn=mysql://db/jobs"), "not a PostgreSQL DSN"),
    (("--quaero-backend=oracle",), "allowed: sqlite or postgresql"),
])
def test_backend_usage_errors(pytester: pytest.Pytester, args: tuple[str, ...], fragment: str) -> None:
    assert fragment in _usage_error(pytester.runpytest(*BASE, *args, "--quaero-scenario=light"))


@needs_postgresql
def test_an_unreachable_dsn_is_a_usage_error_before_any_item(pytester: pytest.Pytester, tmp_path: Path) -> None:
    dsn = f"postgresql://quaero:s3cret@/jobs?host={tmp_path}&connect_timeout=2"
    error = _usage_error(pytester.runpytest(*BASE, "--quaero-backend=postgresql", f"--quaero-dsn={dsn}",
                                            "--quaero-scenario=light"))
    assert error.startswith("ERROR: --quaero-dsn=postgresql://quaero:***@/jobs") and "s3cret" not in error
    assert "(from the command line): cannot connect" in error and "check the host, port" in error


@needs_postgresql
def test_a_dsn_from_the_environment_is_named_as_such(pytester: pytest.Pytester, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUAERO_DSN", f"postgresql:///jobs?host={tmp_path}&connect_timeout=2")
    error = _usage_error(pytester.runpytest(*BASE, "--quaero-backend=postgresql", "--quaero-scenario=light"))
    assert "(from QUAERO_DSN): cannot connect" in error


@needs_postgresql
def test_a_role_that_may_not_create_a_schema_is_a_usage_error(pytester: pytest.Pytester, pg_server: Any) -> None:
    import psycopg  # deferred: the extra's driver

    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute("drop role if exists quaero_reader")
        conn.execute("create role quaero_reader login")  # CONNECT on the database, as PUBLIC has; no CREATE
    try:
        dsn = psycopg.conninfo.make_conninfo(pg_server.dsn, user="quaero_reader")
        error = _usage_error(pytester.runpytest(*BASE, "--quaero-backend=postgresql", f"--quaero-dsn={dsn}",
                                                "--quaero-scenario=light"))
        assert "role 'quaero_reader' may not create a schema" in error and "GRANT CREATE ON DATABASE" in error
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute("drop role quaero_reader")


@needs_postgresql
def test_help_and_collect_only_never_connect(pytester: pytest.Pytester, tmp_path: Path) -> None:
    dsn = f"postgresql:///jobs?host={tmp_path}&connect_timeout=2"
    for extra in ("--collect-only", "--help"):
        result = pytester.runpytest(*BASE, "--quaero-backend=postgresql", f"--quaero-dsn={dsn}",
                                    "--quaero-scenario=light", extra)
        assert result.ret == pytest.ExitCode.OK, (extra, result.stdout.str() + result.stderr.str())


@pytest.mark.slow
@needs_postgresql
def test_light_medium_heavy_pass_on_the_embedded_server(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*BASE, "--quaero-backend=postgresql", "--quaero-scenario=light,medium,heavy")
    result.assert_outcomes(passed=30)


@pytest.mark.slow
@needs_postgresql
def test_two_xdist_workers_share_one_server_and_one_report(pytester: pytest.Pytester, pg_server: Any) -> None:
    pytest.importorskip("xdist")
    pytester.makeconftest(TWO_SCENARIOS)
    before = _schemas(pg_server.dsn)
    result = pytester.runpytest_subprocess(
        *BASE, "-n", "2", "-v", "--quaero-backend=postgresql", f"--quaero-dsn={pg_server.dsn}",
        "--quaero-scenario=tiny,small", "--quaero-job-time=1ms", "--quaero-stagger=100ms",
        "--quaero-poll-interval=50ms", "--quaero-threshold=stagger_tolerance=2s",
        "--quaero-threshold=min_throughput=1", timeout=180)
    result.assert_outcomes(passed=20)
    ran = {match.group(1): match.group(2) for line in result.outlines
           if (match := re.match(r"^\[(gw\d+)\] \[\s*\d+%\] PASSED (quaero\[\w+\])::", line))}
    assert set(ran) == {"gw0", "gw1"}, ran  # both workers ran a scenario, on the same server
    assert result.stdout.str().count("= quaero load test results =") == 1  # one merged report
    assert _schemas(pg_server.dsn) == before


@needs_postgresql
def test_the_marker_chooses_postgresql_for_one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marker_backend="""
        import pytest

        @pytest.mark.quaero_scenario(parents=2, children=5, backend="postgresql", stagger="50ms", job_time="1ms")
        def test_on_postgresql(quaero_run):
            result = quaero_run()
            assert result.passed, [v for v in result.verdicts if not v["passed"]]
            assert result.settings["backend"] == "postgresql"
            assert result.extra["postgresql"]["claim_check"]["ok"]

        def test_on_sqlite(quaero_run):
            assert quaero_run("light", stagger="50ms", job_time="1ms").settings["backend"] == "sqlite"
    """)
    pytester.runpytest(*BASE, *RELAXED).assert_outcomes(passed=2)
