"""``--quaero-audit=PATH``: the integrity criteria on an existing database, which stays untouched.

The databases are real files written by real connections: a kept run of the
plugin, a Quaero-shaped one (progress_json, NULL parent ids), and one whose writer
was killed (a WAL left behind, with and without its -shm). Hashes are taken when
no connection to the file is open in this process.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_quaero.core.audit import AUDIT_CRITERIA, AuditError, audit, check_auditable, inspect_file
from pytest_quaero.core.queue import SCHEMA as QUEUE_SCHEMA
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import SCHEMA as STORE_SCHEMA

BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
KEYS = [key for key, _ in AUDIT_CRITERIA]


def digest(path: Path) -> dict[str, str | None]:
    """Hashes of the database and its -wal; the -shm is SQLite's scratch space, not content."""
    out: dict[str, str | None] = {}
    for suffix in ("", "-wal"):
        file = Path(f"{path}{suffix}")
        out[suffix or "db"] = hashlib.sha256(file.read_bytes()).hexdigest() if file.exists() else None
    return out


def write_in_subprocess(script: str, *, kill: bool = False) -> None:
    """Run ``script`` in a child; ``kill`` ends it with os._exit so its WAL and -shm stay behind."""
    code = textwrap.dedent(script) + ("\nimport os; os._exit(0)\n" if kill else "")
    subprocess.run([sys.executable, "-c", code], check=True)


def run_db(tmp_path: Path) -> Path:
    """A clean, fully processed database: this plugin's own schema, counters as columns."""
    path = tmp_path / "service.db"
    write_in_subprocess(f"""
        import sqlite3
        conn = sqlite3.connect({str(path)!r}, isolation_level=None)
        conn.execute("pragma journal_mode=wal")
        conn.executescript({QUEUE_SCHEMA!r})
        conn.executescript({STORE_SCHEMA!r})
        for p in (1, 2):
            conn.execute("insert into crawl_jobs (id, parent_id, job_type, status, total_urls, completed_urls) "
                         "values (?, '', 'parent', 'completed', 3, 3)", (f"p{{p}}",))
            for c in (1, 2, 3):
                conn.execute("insert into crawl_jobs (id, parent_id, job_type, status) "
                             "values (?, ?, 'crawler_url', 'completed')", (f"p{{p}}-c{{c}}", f"p{{p}}"))
        conn.close()
        """)
    return path


def quaero_db(tmp_path: Path, *, kill: bool) -> Path:
    """Quaero's own shape: progress_json on the parent, NULL parent_id, children left 'pending'
    (Quaero's crawler_url handler never updated a child's status), an orphan, goqite leftovers."""
    path = tmp_path / "quaero.db"
    write_in_subprocess(f"""
        import sqlite3
        conn = sqlite3.connect({str(path)!r}, isolation_level=None)
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma wal_autocheckpoint=0")
        conn.executescript({QUEUE_SCHEMA!r})
        conn.execute("create table crawl_jobs (id text primary key, parent_id text, job_type text, "
                     "status text not null, progress_json text)")
        conn.execute("insert into crawl_jobs values ('p1', NULL, 'parent', 'completed', "
                     "'{{\\"total_urls\\": 2, \\"completed_urls\\": 2, \\"failed_urls\\": 0, \\"pending_urls\\": 0}}')")
        conn.execute("insert into crawl_jobs values ('p2', NULL, 'parent', 'running', "
                     "'{{\\"total_urls\\": 3, \\"completed_urls\\": 0, \\"failed_urls\\": 0, \\"pending_urls\\": 3}}')")
        for cid, pid in [("c1", "p1"), ("c2", "p1"), ("c3", "p2"), ("c4", "gone")]:
            conn.execute("insert into crawl_jobs values (?, ?, 'crawler_url', 'pending', '{{}}')", (cid, pid))
        conn.execute("insert into goqite (queue, body, received) values ('quaero_jobs', x'7b7d', 3)")
        conn.execute("insert into goqite (queue, body) values ('quaero_jobs', x'7b7d')")
        conn.execute("insert into goqite (queue, body) values ('other', x'7b7d')")
        """, kill=kill)
    return path


def run_audit(pytester: pytest.Pytester, path: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE, f"--quaero-audit={path}", "-v", *args)


def test_a_clean_database_passes_every_criterion_and_is_not_touched(pytester: pytest.Pytester,
                                                                   tmp_path: Path) -> None:
    path = run_db(tmp_path)
    before = digest(path)
    assert before["-wal"] is None  # closed cleanly: checkpointed and removed
    result = run_audit(pytester, path)
    result.assert_outcomes(passed=len(KEYS))
    result.stdout.fnmatch_lines([f"quaero-audit[[]service.db[]]::{key} PASSED*" for key in KEYS])
    result.stdout.fnmatch_lines([
        "*= quaero audit =*",
        f"{path} (mode=ro&immutable=1 (no WAL to read)); tables: crawl_jobs, goqite",
        "  Children per Parent*PASS  measured 2/2 parents match*",
    ])
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["service.db"]  # no -wal, no -shm created


def test_a_quaero_database_left_by_a_killed_service(pytester: pytest.Pytester, tmp_path: Path) -> None:
    path = quaero_db(tmp_path, kill=True)
    os.unlink(f"{path}-shm")  # as after a reboot: only the database and its WAL are left
    before = digest(path)
    assert before["-wal"] is not None
    result = run_audit(pytester, path)
    result.assert_outcomes(passed=2, failed=5)
    out = result.stdout.str()
    assert "a copy with its WAL (no -shm: nobody has the file open)" in out
    assert "Messages Left in the Queue: measured 2, required = 0 (still deliverable: other 1, quaero_jobs 1)" in out
    assert "Dead Messages: measured 1, required = 0 (received >= max_receive 3, visibility timeout over)" in out
    assert "Orphaned Children: measured 1, required = 0 (e.g. c4 -> missing gone)" in out
    assert ("Parent Progress vs Child Statuses: measured 1/2 parents agree" in out
            and "p1: counters completed=2 failed=0, children say completed=0 failed=0 of 2" in out)
    result.stdout.fnmatch_lines(["quaero-audit[[]quaero.db[]]::children_per_parent FAILED*",
                                 "quaero-audit[[]quaero.db[]]::wal_checkpoint PASSED*"])
    assert "p2: 1 children, total_urls 3" in out
    assert digest(path) == before
    assert not Path(f"{path}-shm").exists()  # the audit read a copy; it created nothing here


def test_a_database_with_its_shm_is_read_in_place_read_only(tmp_path: Path) -> None:
    path = quaero_db(tmp_path, kill=True)
    before = digest(path)
    facts = inspect_file(str(path))
    assert facts.shm_exists and facts.wal_frames > 0
    found = audit(str(path), Settings())
    assert found.opened.startswith("mode=ro (the -shm exists")
    assert found.verdicts["messages_left"]["value"] == 2  # rows that only exist in the WAL were read
    assert found.facts["progress"] == "progress_json" and found.facts["parents"] == 2
    assert digest(path) == before


def test_max_receive_decides_what_is_dead(tmp_path: Path) -> None:
    path = quaero_db(tmp_path, kill=False)
    assert audit(str(path), Settings(max_receive=3)).verdicts["dead_messages"]["value"] == 1
    assert audit(str(path), Settings(max_receive=5)).verdicts["dead_messages"]["value"] == 0


def test_a_message_on_its_last_delivery_is_in_flight_not_dead(tmp_path: Path) -> None:
    """Received max_receive times is dead only once its visibility timeout is over: until then
    its last delivery may still delete it."""
    path = tmp_path / "in-flight.db"
    write_in_subprocess(f"""
        import sqlite3
        conn = sqlite3.connect({str(path)!r}, isolation_level=None)
        conn.executescript({QUEUE_SCHEMA!r})
        insert = "insert into goqite (queue, body, received, timeout) values ('q', x'00', 3, strftime(?, 'now', ?))"
        conn.execute(insert, ("%Y-%m-%dT%H:%M:%fZ", "+1 hour"))   # last delivery running
        conn.execute(insert, ("%Y-%m-%dT%H:%M:%fZ", "-1 second"))  # last delivery over: dead
        conn.close()
        """)
    found = audit(str(path), Settings(max_receive=3))
    dead, left = found.verdicts["dead_messages"], found.verdicts["messages_left"]
    assert dead["value"] == 1, dead  # was 2: counted from the receive count alone
    assert dead["detail"] == "never delivered again: q 1"
    assert left["value"] == 1 and left["detail"] == "in flight (visibility timeout running): q 1", left
    assert found.facts["queues"] == {"q": {"messages": 2, "in_flight": 1, "dead": 1}}


def test_a_long_wal_fails_the_checkpoint_criterion(tmp_path: Path) -> None:
    path = tmp_path / "starved.db"
    write_in_subprocess(f"""
        import sqlite3
        conn = sqlite3.connect({str(path)!r}, isolation_level=None)
        conn.execute("pragma journal_mode=wal")
        conn.execute("pragma wal_autocheckpoint=0")  # as if a reader starved every checkpoint
        conn.executescript({QUEUE_SCHEMA!r})
        for i in range(1200):
            conn.execute("insert into goqite (queue, body) values ('q', zeroblob(3000))")
        conn.execute("delete from goqite")
        """, kill=True)
    found = audit(str(path), Settings())
    verdict = found.verdicts["wal_checkpoint"]
    assert not verdict["passed"] and verdict["value"] > 1000
    assert "longer than wal_autocheckpoint" in verdict["detail"]
    assert found.skipped["orphans"] == "no crawl_jobs table in starved.db"


def test_only_a_goqite_table_skips_the_job_criteria(pytester: pytest.Pytester, tmp_path: Path) -> None:
    path = tmp_path / "queue-only.db"
    write_in_subprocess(f"""
        import sqlite3
        conn = sqlite3.connect({str(path)!r})
        conn.executescript({QUEUE_SCHEMA!r})
        conn.close()
        """)
    result = run_audit(pytester, path, "-rs")
    result.assert_outcomes(passed=4, skipped=3)
    result.stdout.fnmatch_lines(["SKIPPED*no crawl_jobs table in queue-only.db"])


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such file"),
        (b"", "not an SQLite database"),
        (b"id,name\n1,x\n" * 20, "not an SQLite database (the file does not start with 'SQLite format 3')"),
    ],
)
def test_a_file_that_is_not_a_database_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path,
                                                        content: bytes | None, fragment: str) -> None:
    path = tmp_path / "jobs.db"
    if content is not None:
        path.write_bytes(content)
    result = run_audit(pytester, path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert errors == [f"ERROR: --quaero-audit={path}: {fragment}" + ("." if fragment == "no such file" else "")] \
        or (len(errors) == 1 and fragment in errors[0]), result.errlines
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_database_without_the_tables_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("create table users (id integer)")
    conn.commit()
    conn.close()
    result = run_audit(pytester, path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (f"ERROR: --quaero-audit={path}: has neither a goqite table nor a crawl_jobs table (tables: users); "
            "audit needs at least one of them.") in result.errlines
    with pytest.raises(AuditError):
        check_auditable(str(path))
