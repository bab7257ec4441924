"""Bad files and faults (issue 12): the database checked once up front, writers that never replace a
special file, a failed report write that fails the session, a live run told apart from a leftover queue,
baseline documents of the wrong shape. Real files, real SQLite, real processes; no mocks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Imported before pytester's first in-process run, so the runs reuse them (see test_plugin.py).
from pytest_quaero import __main__ as cli
from pytest_quaero import items, plugin  # noqa: F401
from pytest_quaero.core import baseline, db, dbfile, run  # noqa: F401
from pytest_quaero.core.baseline import BaselineError, BaselineStore
from pytest_quaero.core.files import SpecialFileError
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.results_json import build_document, write_atomic, write_text_atomic
from pytest_quaero.core.run import RunError
from pytest_quaero.core.seed import prepare_database
from pytest_quaero.core.settings import Settings

FAST = ("--quaero-job-time=1ms", "--quaero-stagger=100ms", "--quaero-poll-interval=50ms")
RELAXED = ("--quaero-threshold=stagger_tolerance=2s", "--quaero-threshold=min_throughput=1")
BASE = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run_pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE, *args)


def usage_error(result: pytest.RunResult, *fragments: str) -> str:
    """Exit 4, one ``ERROR:`` line holding every fragment, no traceback, no item run."""
    everything = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, everything
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert "Traceback" not in everything and "quaero[light]::" not in everything
    return errors[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def char_device(path: Path) -> Path:
    """A private /dev/full (same major/minor) to point writers at: losing it would cost nothing."""
    if not ROOT:
        pytest.skip("creating a device node needs root (mknod)")
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    return path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    yield path
    server.close()


def kept_db(tmp_path: Path) -> Path:
    """A database a run left: both tables, no messages."""
    path = tmp_path / "kept.db"
    prepare_database(path, Settings())
    return path


# ---------------------------------------------------------------- the database, checked up front


@pytest.mark.parametrize("kind", ["/dev/null", "fifo", "socket", "char device"])
def test_db_that_is_not_a_regular_file_is_one_usage_error(pytester: pytest.Pytester, kind: str) -> None:
    if kind == "/dev/null":
        path, said = Path("/dev/null"), "is a character device, not a regular file"
    elif kind == "fifo":
        path, said = pytester.path / "fifo.db", "is a FIFO (named pipe), not a regular file"
        os.mkfifo(path)
    elif kind == "socket":
        path, said = pytester.path / "s.db", "is a socket, not a regular file"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        pytester._request.addfinalizer(server.close)
    else:
        path, said = char_device(pytester.path / "full.db"), "is a character device"
    before = os.stat(path)
    error = usage_error(run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={path}", *FAST),
                        f"--quaero-db={path} (from the command line)", said, "give --quaero-db a new file name")
    assert error.count(str(path)) >= 2
    after = os.stat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)  # the node is untouched


def test_db_of_garbage_bytes_is_one_usage_error_and_left_untouched(pytester: pytest.Pytester) -> None:
    path = pytester.path / "garbage.db"
    path.write_bytes(b"this is my shopping list, not a database\n" * 200)
    before = digest(path)
    usage_error(run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={path}", *FAST),
                str(path), "is not an SQLite database", "b'this is my shopp'", "left untouched")
    assert digest(path) == before
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}.lock").exists()


def test_truncated_db_is_one_usage_error(pytester: pytest.Pytester) -> None:
    whole = kept_db(pytester.path)
    conn = sqlite3.connect(whole)
    conn.execute("create table padding (x blob)")
    conn.executemany("insert into padding values (?)", [(os.urandom(400),) for _ in range(300)])
    conn.commit()
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()
    path = pytester.path / "truncated.db"
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    usage_error(run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={path}", *FAST),
                str(path), "is truncated: its header says", f"but the file holds {len(data) // 2}")


def test_crawl_jobs_of_another_shape_is_one_usage_error(pytester: pytest.Pytester) -> None:
    path = pytester.path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("create table crawl_jobs (id integer primary key, title text)")
    conn.commit()
    conn.close()
    usage_error(run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={path}", *FAST),
                "table crawl_jobs has another shape", "it lacks parent_id, job_type", "(it has id, title)")


def test_goqite_without_priority_is_not_another_shape(tmp_path: Path) -> None:
    # goqite v0.3.1 wrote no priority column: the queue reads it as 0, so the check lets it through
    path = tmp_path / "v031.db"
    conn = sqlite3.connect(path)
    conn.execute("create table goqite (id text primary key, created text not null, updated text not null, "
                 "queue text not null, body blob not null, timeout text not null, received integer not null)")
    conn.commit()
    conn.close()
    dbfile.check_file(path, Settings())


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_db_held_under_begin_exclusive_by_another_process(pytester: pytest.Pytester, journal: str) -> None:
    path = kept_db(pytester.path)
    conn = sqlite3.connect(path)
    conn.execute(f"pragma journal_mode = {journal}")
    conn.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\nc.execute('begin exclusive')\n"
         "print('locked', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={path}", "--quaero-busy-timeout=200ms",
                            *FAST)
        usage_error(result, str(path), "is locked by another process", f"pid {holder.pid}",
                    "after the busy_timeout of 200ms", "use another --quaero-db path")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)


@pytest.mark.skipif(ROOT, reason="root bypasses permission bits; the read-only file system test covers root")
def test_new_db_in_a_read_only_folder(pytester: pytest.Pytester) -> None:
    folder = pytester.path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        usage_error(run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={folder / 'new.db'}", *FAST),
                    f"SQLite must create the database in {folder}, but cannot: permission denied")
    finally:
        folder.chmod(0o755)


def _can_mount_read_only() -> bool:
    if shutil.which("unshare") is None or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs unshare -rm (user and mount namespaces)")
def test_db_on_a_read_only_file_system(pytester: pytest.Pytester) -> None:
    """A read-only bind mount in a user namespace: a condition root cannot bypass, built without privileges."""
    folder = pytester.path / "ro"
    folder.mkdir()
    kept_db(folder)
    before = digest(folder / "kept.db")
    argv = [sys.executable, "-m", "pytest", *BASE, "--quaero-scenario=light", *FAST]
    script = (f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder} && "
              f"{' '.join(argv)} --quaero-db={folder / 'new.db'}; echo \"exit $?\"; "
              f"{' '.join(argv)} --quaero-db={folder / 'kept.db'}; echo \"exit $?\"")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=pytester.path, capture_output=True,
                          text=True, timeout=120, check=False)
    out = done.stdout + done.stderr
    assert out.count("exit 4") == 2, out
    assert (f"new.db: SQLite must create the database in {folder}, but cannot: it is on a read-only file "
            "system") in out
    assert (f"kept.db: SQLite must keep its -wal/-shm (or -journal) files in {folder}, but cannot: it is on a "
            "read-only file system") in out
    assert "Traceback" not in out
    assert digest(folder / "kept.db") == before


# ---------------------------------------------------------------- run-time failures: one per scenario


def test_a_database_failing_at_run_time_is_one_error_per_scenario_and_kept(pytester: pytest.Pytester) -> None:
    path = kept_db(pytester.path)
    # a project test that runs before the scenario and ruins the file the up-front check accepted
    pytester.makepyfile(test_first=f"def test_ruin():\n    open({str(path)!r}, 'r+b').write(b'x' * 100)\n")
    result = run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={path}", "-rs", *FAST, *RELAXED)
    result.assert_outcomes(passed=1, errors=1, skipped=9)
    out = result.stdout.str()
    assert "Traceback" not in out and "def _prepare" not in out
    result.stdout.fnmatch_lines([
        f"quaero[[]light[]] could not run: {path}: the database could not be prepared (DatabaseError: file is not "
        "a database); check it with: sqlite3 *",
        f"database kept: {path}",
    ])
    assert out.count("not measured: quaero[light] could not run (reported on quaero[light]::") == 1  # -rs: [7]
    assert path.exists()


def test_prepare_names_a_live_run_and_keeps_the_earlier_run_message_for_leftovers(tmp_path: Path) -> None:
    path = kept_db(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("insert into goqite (queue, body) values ('quaero_jobs', x'00')")
    conn.commit()
    conn.close()
    live = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pytest_quaero.core.dbfile import RunLock\n"
         f"RunLock.acquire({str(path)!r}, command='pytest --quaero-db=kept.db')\nprint('held', flush=True)\n"
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "held"
        with pytest.raises(RunError) as info:
            run._prepare(str(path), Settings())
        assert "another run is using this file right now" in str(info.value)
        assert f"pid {live.pid}" in str(info.value) and "pytest --quaero-db=kept.db" in str(info.value)
    finally:
        assert live.stdin is not None
        live.stdin.close()
        live.wait(30)
    with pytest.raises(RunError, match="already holds 1 messages from an earlier run"):
        run._prepare(str(path), Settings())


def test_a_second_run_on_the_same_db_is_told_another_run_uses_it(pytester: pytest.Pytester) -> None:
    path = pytester.path / "shared.db"
    first = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom pytest_quaero.core.dbfile import RunLock\n"
         f"RunLock.acquire({str(path)!r}, command='pytest --quaero-scenario=heavy')\nprint('held', flush=True)\n"
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "held"
        usage_error(run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={path}", *FAST),
                    f"{path} is in use by another run right now (pid {first.pid}", "pytest --quaero-scenario=heavy",
                    "wait for that run to finish, or give this one another --quaero-db path")
    finally:
        assert first.stdin is not None
        first.stdin.close()
        first.wait(30)
    # the holder is gone: the lock it left is no one's, and a run goes ahead (and tidies the lock away)
    run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={path}", *FAST, *RELAXED).assert_outcomes(passed=10)
    assert not Path(f"{path}.lock").exists()


@pytest.mark.parametrize("args", [("--help",), ("--markers",), ("--fixtures",), ("--collect-only",)])
def test_nothing_is_opened_when_no_test_runs(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    # an IDE discovering tests (--collect-only) while a run uses the file must not be refused
    path = pytester.path / "garbage.db"
    path.write_bytes(b"not a database" * 10)
    result = run_pytest(pytester, "--quaero-scenario=light", f"--quaero-db={path}", *args)
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED), result.errlines
    assert not Path(f"{path}.lock").exists()


def test_the_run_lock_is_shared_within_a_process_and_released(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    first = dbfile.RunLock.acquire(path)
    second = dbfile.RunLock.acquire(path)
    assert second is first and dbfile.holder(path) is None  # this process is no other run
    second.release()
    assert Path(f"{path}.lock").exists()
    first.release()
    assert not Path(f"{path}.lock").exists()


# ---------------------------------------------------------------- writers never replace special files


@pytest.mark.parametrize("kind", ["fifo", "socket", "char device"])
def test_the_atomic_writer_refuses_a_path_that_is_not_a_regular_file(tmp_path: Path, kind: str,
                                                                     request: pytest.FixtureRequest) -> None:
    if kind == "fifo":
        path = tmp_path / "out.json"
        os.mkfifo(path)
    elif kind == "socket":
        path = request.getfixturevalue("unix_socket")
    else:
        path = char_device(tmp_path / "full")
    before = os.stat(path)
    with pytest.raises(SpecialFileError, match="not a regular file; refusing to replace it"):
        write_text_atomic(path, "{}")
    with pytest.raises(OSError, match=f"{path} is a"):
        BaselineStore(path).save(RunResult(scenario="light", parents=5, children_per_parent=20, run_id="r",
                                           settings={}), "machine")
    after = os.stat(path)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_connect_refuses_a_special_file(unix_socket: Path) -> None:
    with pytest.raises(db.DatabaseError, match="is a socket, not a regular file; refusing to open it"):
        db.connect(unix_socket, Settings())


@pytest.mark.parametrize("option", ["--quaero-json", "--quaero-report", "--quaero-save-baseline"])
def test_output_paths_are_checked_up_front(pytester: pytest.Pytester, option: str) -> None:
    fifo = pytester.path / "out.fifo"
    os.mkfifo(fifo)
    error = usage_error(run_pytest(pytester, "--quaero-scenario=light", f"{option}={fifo}", *FAST),
                        option, f"{fifo} is a FIFO (named pipe), not a regular file")
    assert "refusing to" in error
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_an_output_folder_that_cannot_be_created_is_a_usage_error(pytester: pytest.Pytester) -> None:
    (pytester.path / "plain").write_text("a file, not a folder")
    usage_error(run_pytest(pytester, f"--quaero-json={pytester.path / 'plain' / 'r.json'}"),
                "--quaero-json=", "plain is a file, so nothing can be written below it")


# ---------------------------------------------------------------- a failed write fails the session


@pytest.mark.parametrize("what, option", [("JSON results", "--quaero-json"), ("Markdown report", "--quaero-report")])
def test_a_report_that_cannot_be_written_fails_the_session(pytester: pytest.Pytester, what: str,
                                                           option: str) -> None:
    target = pytester.path / "out" / "quaero.file"
    # a test of the project turns the path into a FIFO after the up-front check accepted it
    pytester.makepyfile(test_fifo=f"import os\n\ndef test_make():\n    os.mkfifo({str(target)!r})\n")
    target.parent.mkdir()
    result = run_pytest(pytester, f"{option}={target}")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        f"quaero: could not write the {what} to {target}: {target} is a FIFO (named pipe), not a regular file; "
        "refusing to replace it",
        "quaero: the session fails: a file it was asked to write is missing",
    ])
    assert stat.S_ISFIFO(os.stat(target).st_mode)


# ---------------------------------------------------------------- baseline documents of the wrong shape

BAD_DOCUMENTS = [
    ({"schema_version": "1", "results": []}, "schema_version is '1' (a string); expected a whole number such as 1"),
    ({"schema_version": 1, "results": [1, 2]}, "results[0] is 1 (a number); every result must be an object"),
    ({"schema_version": 1, "results": {"light": 1}}, "results is an object; expected a list of results"),
    ({"schema_version": True, "results": []}, "schema_version is True (a boolean)"),
    ({"schema_version": 1, "results": [{"scenario": "light"}]}, "results[0] cannot be read as a scenario result"),
]


@pytest.mark.parametrize("document, said", BAD_DOCUMENTS)
def test_compare_names_the_file_and_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  document: object, said: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    good = write_atomic(tmp_path / "good.json", build_document([]))
    for args in ([str(bad), str(good)], [str(good), str(bad)]):
        assert cli.main(["compare", *args]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert err.startswith(f"error: {bad}: ") and said in err, err
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("document, said", BAD_DOCUMENTS[:2])
@pytest.mark.parametrize("option", ["--quaero-baseline", "--quaero-save-baseline"])
def test_the_gate_names_the_baseline_file_and_what_is_wrong(pytester: pytest.Pytester, document: object, said: str,
                                                             option: str) -> None:
    bad = pytester.path / "baseline.json"
    bad.write_text(json.dumps(document))
    usage_error(run_pytest(pytester, "--quaero-scenario=light", f"{option}={bad}", *FAST),
                f"{option}: baseline {bad}: ", said)
    assert json.loads(bad.read_text()) == document  # never overwritten


def test_a_store_entry_of_the_wrong_shape_is_a_baseline_error(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"schema_version": 1, "results": [1, 2]}))
    with pytest.raises(BaselineError, match=r"results\[0\] is 1 \(a number\)"):
        BaselineStore(path).find("light-5x20", "m")
