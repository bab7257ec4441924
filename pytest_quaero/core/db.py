"""The one place connections are opened: pragmas set per connection and read back.

busy_timeout, synchronous and cache_size are per-connection settings in SQLite and
vanish with the connection, so every connection a worker, producer or monitor opens
comes from :func:`connect`. The journal mode is persistent in the file and is set
once by :func:`prepare`, before any worker starts, because changing it needs a lock
that a booting pool would fight over.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any

from pytest_quaero.core.files import SpecialFileError, refuse_special
from pytest_quaero.core.observed import SYNCHRONOUS_NAMES, ObservedConnection
from pytest_quaero.core.settings import Settings

__all__ = [
    "DatabaseError",
    "Pragmas",
    "conn_path",
    "connect",
    "prepare",
    "read_pragmas",
    "set_busy_timeout",
    "set_cache_size",
    "verify",
    "wal_checkpoint",
]


#: what every connection is made of: observed (statements, lock hold and wait) unless a benchmark
#: swaps in the plain class to measure what observing costs (benchmarks/bench_instruments.py)
CONNECTION_FACTORY: type[sqlite3.Connection] = ObservedConnection


class DatabaseError(RuntimeError):
    """The database is not set up the way the settings say it must be."""


@dataclass(frozen=True)
class Pragmas:
    """What a connection really runs with, read back from SQLite."""

    journal_mode: str
    busy_timeout_ms: int
    synchronous: str
    cache_size_kib: int
    sqlite_version: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "journal_mode": self.journal_mode,
            "busy_timeout_ms": self.busy_timeout_ms,
            "synchronous": self.synchronous,
            "cache_size_kib": self.cache_size_kib,
            "sqlite_version": self.sqlite_version,
        }




def connect(
    path: str | os.PathLike[str], settings: Settings, *, read_only: bool = False, origin: str = "plugin"
) -> sqlite3.Connection:
    """Open a connection with the settings' pragmas applied, observed by the run in progress.

    ``isolation_level=None`` leaves transactions to the caller: every multi-statement
    write says ``BEGIN IMMEDIATE`` (or ``BEGIN`` when that fix is disabled) itself,
    because the sqlite3 module's implicit ``BEGIN`` is DEFERRED and turns a read then
    write into SQLITE_BUSY_SNAPSHOT under load.
    """
    try:
        refuse_special(path, doing="open")  # SQLite would write pages into a device, or hang on a FIFO
    except SpecialFileError as exc:
        raise DatabaseError(f"{exc}: a database must be a regular file (or a path that does not exist yet)") from None
    if read_only:
        uri = f"file:{os.fspath(path)}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=settings.busy_timeout_ms / 1000, isolation_level=None,
                               factory=CONNECTION_FACTORY)
    else:
        conn = sqlite3.connect(os.fspath(path), timeout=settings.busy_timeout_ms / 1000, isolation_level=None,
                               factory=CONNECTION_FACTORY)
    # busy_timeout goes first: every later statement may already meet a lock.
    conn.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
    conn.execute(f"PRAGMA synchronous = {settings.synchronous}")
    conn.execute(f"PRAGMA cache_size = {-int(settings.cache_size_mb) * 1024}")
    if isinstance(conn, ObservedConnection) and conn.instruments is not None:
        # read back, not taken from the settings: the run reports what the connection really runs with
        conn.instruments.configured(origin, conn.configuration())
    return conn


def open_connection(db_path: str | os.PathLike[str], settings: Settings) -> sqlite3.Connection:
    """A connection with the run's pragmas that the run observes like its own (``pytest_quaero.connect``).

    For code under test that opens connections of its own (a job handler writing its own
    table, a library's connection): the caller closes it.
    """
    return connect(db_path, settings, origin="user")


def set_busy_timeout(conn: sqlite3.Connection, milliseconds: int) -> None:
    """Let ``conn`` wait ``milliseconds`` for a lock instead of what :func:`connect` set from the settings."""
    conn.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")


def set_cache_size(conn: sqlite3.Connection, kib: int) -> None:
    """Give ``conn`` a page cache of ``kib`` KiB instead of what :func:`connect` set from the settings."""
    conn.execute(f"PRAGMA cache_size = {-int(kib)}")


def wal_checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """``PRAGMA wal_checkpoint(TRUNCATE)``: ``(busy, log_frames, checkpointed_frames)`` as SQLite returns them.

    ``busy`` is 1 when a reader's snapshot or a writer kept the checkpoint from finishing
    within the connection's busy_timeout.
    """
    busy, log_frames, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return int(busy), int(log_frames), int(done)


def prepare(path: str | os.PathLike[str], settings: Settings) -> Pragmas:
    """Set the persistent journal mode once and return the pragmas read back."""
    conn = connect(path, settings, origin="setup")  # before the journal mode is set: told apart
    try:
        wanted = "wal" if settings.wal else "delete"
        current = conn.execute("PRAGMA journal_mode").fetchone()[0].lower()
        if current != wanted:
            conn.execute(f"PRAGMA journal_mode = {wanted}").fetchall()
        return verify(conn, settings)
    finally:
        conn.close()


def read_pragmas(conn: sqlite3.Connection) -> Pragmas:
    """The pragmas this connection runs with."""
    return Pragmas(
        journal_mode=str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower(),
        busy_timeout_ms=int(conn.execute("PRAGMA busy_timeout").fetchone()[0]),
        synchronous=SYNCHRONOUS_NAMES.get(int(conn.execute("PRAGMA synchronous").fetchone()[0]), "?"),
        cache_size_kib=-int(conn.execute("PRAGMA cache_size").fetchone()[0]),
        sqlite_version=sqlite3.sqlite_version,
    )


def verify(conn: sqlite3.Connection, settings: Settings) -> Pragmas:
    """Read the pragmas back and fail loudly when SQLite did not take one."""
    pragmas = read_pragmas(conn)
    expected = {
        "journal_mode": "wal" if settings.wal else "delete",
        "busy_timeout_ms": settings.busy_timeout_ms,
        "synchronous": settings.synchronous,
        "cache_size_kib": settings.cache_size_mb * 1024,
    }
    wrong = {k: (getattr(pragmas, k), v) for k, v in expected.items() if getattr(pragmas, k) != v}
    if wrong:
        detail = ", ".join(f"{k} is {got!r}, settings want {want!r}" for k, (got, want) in wrong.items())
        raise DatabaseError(f"{os.fspath(conn_path(conn))}: {detail}")
    return pragmas


def conn_path(conn: sqlite3.Connection) -> str:
    """The file ``conn`` has open (as SQLite names it), or ``?``."""
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row else "?"
