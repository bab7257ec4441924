"""The file ``--quaero-db`` names: checked once, before any run, and marked as in use while a session runs.

SQLite reports a bad file late and obscurely: ``disk I/O error`` for /dev/null, ``file is
not a database`` once the first table is created, ``no such column`` deep inside a worker,
``database is locked`` after the busy_timeout, repeated for every criterion item.
:func:`check_file` finds each of those before anything runs and says, in one sentence,
which file, what is wrong with it and what to do. It never writes to the file.

:class:`RunLock` marks the file as in use by a live run: an advisory lock (``flock``) on
``<file>.lock`` that holds the run's pid, released (and the lock file removed) when the
session ends, and by the OS when the process dies. A second run started on the same
file at the same moment is then told who is using it (:func:`holder`), instead of being
refused for "messages from an earlier run".
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pytest_quaero.core.db import DatabaseError
from pytest_quaero.core.files import describe_kind, unwritable_reason
from pytest_quaero.core.queue import create_schema as create_queue_schema
from pytest_quaero.core.retry import classify
from pytest_quaero.core.settings import Settings
from pytest_quaero.core.store import create_schema as create_store_schema

__all__ = [
    "DatabaseFileError",
    "DatabaseInUse",
    "LockHolder",
    "RunLock",
    "check_contents",
    "check_file",
    "check_path",
    "holder",
    "open_for_session",
]

SQLITE_HEADER = b"SQLite format 3\x00"
#: ``PRAGMA quick_check`` reads every page: skipped above this size (the header checks still run)
QUICK_CHECK_MAX_BYTES = 256 * 1024 * 1024
#: columns a table may lack: goqite v0.3.1 wrote no ``priority`` (the queue reads it as 0)
OPTIONAL_COLUMNS = {"goqite": frozenset({"priority"})}
_NEW_FILE_HINT = "give --quaero-db a new file name (SQLite creates it) or an SQLite file a pytest-quaero run wrote"


class DatabaseFileError(DatabaseError):
    """The file cannot serve as a run's database; the message names it, the cause and what to do."""


class DatabaseInUse(DatabaseFileError):
    """Another live run holds the file's run lock."""


def check_file(path: str | os.PathLike[str], settings: Settings) -> None:
    """Raise :class:`DatabaseFileError` unless ``path`` can serve as a run's database.

    :func:`check_path` (what is there, and may this process write there), then
    :func:`check_contents` (what SQLite finds in it).
    """
    check_path(path)
    check_contents(path, settings)


def check_path(path: str | os.PathLike[str]) -> None:
    """The path, without SQLite: a regular file or nothing yet, writable with its folder, an SQLite header.

    A path that does not exist yet needs a writable folder. An existing one must be a
    regular file (never a device, FIFO or socket), writable along with its folder (SQLite
    keeps -wal/-shm or -journal files beside it), and empty or whole as its header says.
    """
    target = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(target)
    try:
        info: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise DatabaseFileError(f"{target} cannot be examined ({exc.strerror}); {_NEW_FILE_HINT}.") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise DatabaseFileError(
            f"{target} is {describe_kind(info.st_mode)}, not a regular file; SQLite would write into it (or hang "
            f"on it) instead of keeping a database there; {_NEW_FILE_HINT}."
        )
    if not os.path.isdir(folder):
        raise DatabaseFileError(f"{target}: the folder {folder} does not exist; create it or choose another path.")
    reason = unwritable_reason(folder)
    if reason is not None:
        needs = "create the database" if info is None else "keep its -wal/-shm (or -journal) files"
        raise DatabaseFileError(
            f"{target}: SQLite must {needs} in {folder}, but cannot: {reason}; use a path in a writable folder."
        )
    if info is None or info.st_size == 0:
        return  # SQLite creates (or starts) the database
    reason = unwritable_reason(target)
    if reason is not None:
        raise DatabaseFileError(f"{target} cannot be written: {reason}; make it writable or use another path.")
    _check_header(target, info.st_size)


def check_contents(path: str | os.PathLike[str], settings: Settings) -> None:
    """What SQLite finds: undamaged, goqite and crawl_jobs (if there) with the columns the run uses,
    and no other writer for the settings' busy_timeout. Never writes to the file."""
    target = os.path.abspath(os.fspath(path))
    with contextlib.suppress(FileNotFoundError):
        size = os.stat(target).st_size
        if size:
            _check_with_sqlite(target, size, settings)


def open_for_session(db_path: str, checked: list[str], settings: Settings, *, command: str = "") -> RunLock:
    """Check every file a session will run on, holding ``db_path``'s run lock; the lock is returned.

    ``checked`` are the files the runs will use (``db_path`` itself, or one per xdist
    worker). The lock comes after the path checks (a lock file needs a writable folder,
    which they explain better) and before SQLite looks in (another live run is named,
    not waited for).
    """
    for path in checked:
        check_path(path)
    lock = RunLock.acquire(db_path, command=command)
    try:
        for path in checked:
            check_contents(path, settings)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_header(target: str, size: int) -> None:
    try:
        with open(target, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        raise DatabaseFileError(f"{target} cannot be read ({exc.strerror}); {_NEW_FILE_HINT}.") from None
    if not header.startswith(SQLITE_HEADER):
        raise DatabaseFileError(
            f"{target} is not an SQLite database (it starts with {header[:16]!r}, not {SQLITE_HEADER!r}); it was "
            f"left untouched; {_NEW_FILE_HINT}."
        )
    if len(header) < 100:
        raise DatabaseFileError(f"{target} is truncated: {size} bytes, shorter than an SQLite header; "
                                f"{_NEW_FILE_HINT}.")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # the header's page count is valid when its "version-valid-for" matches the change counter
    if header[24:28] == header[92:96] and pages and size < pages * page_size:
        raise DatabaseFileError(
            f"{target} is truncated: its header says {pages} pages of {page_size} bytes ({pages * page_size} bytes) "
            f"but the file holds {size}; restore it from a copy, or {_NEW_FILE_HINT}."
        )


def _expected_columns() -> dict[str, list[str]]:
    """The columns of the tables the run creates, read from their own DDL (never restated here)."""
    conn = sqlite3.connect(":memory:")
    try:
        create_queue_schema(conn)
        create_store_schema(conn)
        return {table: [row[1] for row in conn.execute(f"pragma table_info({table})")] for table in ("goqite",
                                                                                                      "crawl_jobs")}
    finally:
        conn.close()


def _check_with_sqlite(target: str, size: int, settings: Settings) -> None:
    busy_ms = int(settings.busy_timeout_ms)
    try:
        # mode=rw: never creates the file; read-only work only, plus an empty write transaction
        conn = sqlite3.connect(f"file:{quote(target)}?mode=rw", uri=True, timeout=busy_ms / 1000,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise DatabaseFileError(f"{target} cannot be opened by SQLite ({exc}); {_NEW_FILE_HINT}.") from None
    try:
        conn.execute(f"pragma busy_timeout = {busy_ms}")
        if size <= QUICK_CHECK_MAX_BYTES:
            problems = [str(row[0]) for row in conn.execute("pragma quick_check(5)")]
            if problems != ["ok"]:
                raise DatabaseFileError(f"{target} is damaged (SQLite's quick_check: {'; '.join(problems)}); "
                                        f"restore it from a copy, or {_NEW_FILE_HINT}.")
        for table, wanted in _expected_columns().items():
            have = [str(row[1]) for row in conn.execute(f"pragma table_info({table})")]
            missing = [c for c in wanted if c not in have and c not in OPTIONAL_COLUMNS.get(table, ())]
            if have and missing:
                raise DatabaseFileError(
                    f"{target}: table {table} has another shape than the one pytest-quaero uses: it lacks "
                    f"{', '.join(missing)} (it has {', '.join(have)}); {_NEW_FILE_HINT}."
                )
        conn.execute("begin immediate")  # another writer's lock shows here, after the busy_timeout
        conn.execute("rollback")
    except sqlite3.Error as exc:
        if classify(exc):
            others = _lock_holders(target)
            who = f" (pid {', '.join(map(str, others))} holds locks on it)" if others else ""
            raise DatabaseFileError(
                f"{target} is locked by another process{who}: SQLite said {str(exc)!r} after the busy_timeout of "
                f"{busy_ms}ms; let that process finish (or close it), or use another --quaero-db path."
            ) from None
        raise DatabaseFileError(f"{target} cannot be read by SQLite ({exc}); restore it from a copy, or "
                                f"{_NEW_FILE_HINT}.") from None
    finally:
        conn.close()


def _lock_holders(target: str) -> list[int]:
    """Other processes with POSIX locks on the file or its -shm/-wal (Linux's /proc/locks); best effort."""
    inodes = set()
    for name in (target, target + "-shm", target + "-wal", target + "-journal"):
        with contextlib.suppress(OSError):
            info = os.stat(name)
            inodes.add((os.major(info.st_dev), os.minor(info.st_dev), info.st_ino))
    pids: list[int] = []
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) < 6 or fields[1] == "->":
                continue
            major, minor, inode = fields[5].split(":")
            pid = int(fields[4])
            if (int(major, 16), int(minor, 16), int(inode)) in inodes and pid not in (os.getpid(), *pids) and pid > 0:
                pids.append(pid)
    return pids


# ---------------------------------------------------------------- the run lock


@dataclass(frozen=True)
class LockHolder:
    """Who holds a file's run lock, as it wrote itself into the lock file."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        command = f": {self.command}" if self.command else ""
        return f"pid {self.pid}{where}, started {self.started or '?'}{command}"


def _lock_path(db_path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.fspath(db_path)) + ".lock"


def _read_holder(fd: int) -> LockHolder:
    with contextlib.suppress(OSError):
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096).decode("utf-8", "replace")
        with contextlib.suppress(ValueError, TypeError):
            data: Any = json.loads(raw)
            return LockHolder(int(data.get("pid", 0)), str(data.get("host", "")), str(data.get("started", "")),
                              str(data.get("command", "")))
    return LockHolder(0, "", "", "")


#: locks this process holds, by lock path: a second acquire in the process shares the first
_HELD: dict[str, RunLock] = {}


class RunLock:
    """This process is running on the file: ``<file>.lock``, flock'ed and holding the pid."""

    def __init__(self, path: str, fd: int | None) -> None:
        self.path, self.fd, self.users = path, fd, 1

    @classmethod
    def acquire(cls, db_path: str | os.PathLike[str], *, command: str = "") -> RunLock:
        """Hold the file's run lock, or raise :class:`DatabaseInUse` naming the live run that holds it."""
        path = _lock_path(db_path)
        held = _HELD.get(path)
        if held is not None:
            held.users += 1
            return held
        fd = _locked_fd(path, os.fspath(db_path))
        if fd is not None:
            stamp = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with contextlib.suppress(OSError):  # the stamp only explains the lock; the flock is the lock
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, json.dumps(stamp).encode())
        lock = _HELD[path] = cls(path, fd)
        return lock

    def release(self) -> None:
        self.users -= 1
        if self.users > 0 or _HELD.get(self.path) is not self:
            return
        del _HELD[self.path]
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # while still locked: a waiting run then locks a fresh file
            os.close(self.fd)
            self.fd = None


if sys.platform == "win32":  # pragma: no cover - no flock(): no run lock; the leftover check still applies

    def _locked_fd(path: str, db_path: str) -> int | None:
        return None

    def holder(db_path: str | os.PathLike[str]) -> LockHolder | None:
        return None

else:
    import fcntl

    def _flock_briefly(fd: int, seconds: float = 0.2) -> bool:
        """An exclusive flock, retried for a moment: :func:`holder` may be peeking with a shared one."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)

    def _locked_fd(path: str, db_path: str) -> int | None:
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise DatabaseFileError(f"{db_path}: cannot create the run lock {path} ({exc.strerror}); "
                                        "use a path in a writable folder.") from None
            if not _flock_briefly(fd):
                found = _read_holder(fd)
                os.close(fd)
                raise DatabaseInUse(
                    f"{os.path.abspath(db_path)} is in use by another run right now ({found.describe()}; its lock: "
                    f"{path}); wait for that run to finish, or give this one another --quaero-db path."
                ) from None
            # the holder before us may have removed the file between our open and our lock
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    return fd
            os.close(fd)

    def holder(db_path: str | os.PathLike[str]) -> LockHolder | None:
        """The live run (another process) that holds ``db_path``'s run lock, or None."""
        path = _lock_path(db_path)
        if path in _HELD:
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        finally:
            os.close(fd)
        return None
