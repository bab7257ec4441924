"""``pytest --quaero-audit=PATH.db``: the integrity criteria, judged on a database you already have.

For a file a service left behind (a Go goqite service, Quaero itself, or a kept
run of this plugin): messages left, dead messages, orphaned children, children
per parent, parent progress against child statuses, the WAL left behind, and
SQLite's own ``quick_check``. Each is one test item, ``quaero-audit[quaero.db]::orphans``.

Never changes the file. It is opened read-only, and in the way that touches
the least:

* a ``-shm`` file exists (the service may still have the file open): ``mode=ro``,
  so SQLite's locks and the WAL index are honoured and the WAL's frames are read;
* no ``-shm`` but a ``-wal`` with frames (a service that was killed): nobody has
  the file open, so the database and its WAL are copied to a temporary folder
  and the copy is audited (``mode=ro`` would create a ``-shm`` next to the file);
* neither: ``mode=ro&immutable=1``, which takes no locks and creates nothing.

The file's header is read before any connection exists, never during one: in
this process an ``open()``/``close()`` of the file would drop the POSIX locks an
open connection holds (sqlite-locking notes, section 8).

Both ``crawl_jobs`` shapes are understood: this plugin's (progress counters as
columns) and Quaero's (``progress_json``, ``parent_id`` NULL for a parent). So are goqite
tables from before v0.4.0: no ``priority`` column, and ``timeout`` written with a UTC
offset by a Go process outside UTC (compared as its UTC instant).

A ``postgresql://`` (or ``postgres://``, or key=value with ``host=``/``dbname=``) value is a
PostgreSQL database instead: :func:`audit` hands it to :mod:`pytest_quaero.core.postgresql.audit`.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_quaero.core.audit_rules import (
    AuditResult,
    examples,
    judge_orphans,
    judge_parents,
    judge_queues,
    progress_columns,
    record_tree,
)
from pytest_quaero.core.criteria import Verdict
from pytest_quaero.core.queue import DUE

if TYPE_CHECKING:
    from pytest_quaero.core.settings import Settings

__all__ = ["AUDIT_CRITERIA", "AuditError", "AuditResult", "audit", "audit_label", "check_target", "inspect_file",
           "is_dsn", "open_readonly"]

SQLITE_HEADER = b"SQLite format 3\x00"
#: SQLite's default wal_autocheckpoint, in pages: a WAL longer than this was not checkpointed
WAL_AUTOCHECKPOINT = 1000

#: key, title; the order of the items
AUDIT_CRITERIA: tuple[tuple[str, str], ...] = (
    ("messages_left", "Messages Left in the Queue"),
    ("dead_messages", "Dead Messages"),
    ("orphans", "Orphaned Children"),
    ("children_per_parent", "Children per Parent"),
    ("parent_progress", "Parent Progress vs Child Statuses"),
    ("wal_checkpoint", "WAL Checkpoint State"),
    ("sqlite_integrity", "SQLite quick_check"),
)
_NEEDS = {"messages_left": "goqite", "dead_messages": "goqite", "orphans": "crawl_jobs",
          "children_per_parent": "crawl_jobs", "parent_progress": "crawl_jobs"}


class AuditError(ValueError):
    """The file cannot be audited: missing, not SQLite, or without the tables."""


@dataclass(frozen=True)
class FileFacts:
    """What the audit knows about the file before opening it."""

    path: str
    size: int
    page_size: int
    wal_header: bool
    wal_bytes: int
    shm_exists: bool

    @property
    def wal_frames(self) -> int:
        if self.wal_bytes <= 32:
            return 0
        return (self.wal_bytes - 32) // (self.page_size + 24)


def inspect_file(path: str, where: str = "--quaero-audit") -> FileFacts:
    """Check that ``path`` is an SQLite database; read its header (no connection is open)."""
    label = f"{where}={path}"
    if not os.path.exists(path):
        raise AuditError(f"{label}: no such file.")
    if not os.path.isfile(path):
        raise AuditError(f"{label}: not a file.")
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise AuditError(f"{label}: not an SQLite database (the file does not start with 'SQLite format 3').")
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    wal_path, shm_path = path + "-wal", path + "-shm"
    return FileFacts(
        path=path,
        size=os.path.getsize(path),
        page_size=page_size,
        wal_header=header[18] == 2 and header[19] == 2,
        wal_bytes=os.path.getsize(wal_path) if os.path.exists(wal_path) else 0,
        shm_exists=os.path.exists(shm_path),
    )


def _uri(path: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?{query}"


@contextmanager
def open_readonly(facts: FileFacts) -> Iterator[tuple[sqlite3.Connection, str]]:
    """A read-only connection chosen as the module docstring says; yields (conn, how)."""
    scratch: str | None = None
    if facts.shm_exists:
        uri, how = _uri(facts.path, mode="ro"), "mode=ro (the -shm exists: the file may be open elsewhere)"
    elif facts.wal_bytes > 0:
        scratch = tempfile.mkdtemp(prefix="quaero-audit-")
        copy = os.path.join(scratch, os.path.basename(facts.path))
        shutil.copyfile(facts.path, copy)
        shutil.copyfile(facts.path + "-wal", copy + "-wal")
        uri, how = _uri(copy, mode="ro"), "a copy with its WAL (no -shm: nobody has the file open)"
    else:
        uri, how = _uri(facts.path, mode="ro", immutable="1"), "mode=ro&immutable=1 (no WAL to read)"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        yield conn, how
    finally:
        conn.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"pragma table_info({table})").fetchall()}


def tables_of(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("select name from sqlite_master where type = 'table' order by name")]


def check_auditable(path: str, where: str = "--quaero-audit") -> FileFacts:
    """Usage checks up front: SQLite, readable, and a goqite or crawl_jobs table in it."""
    facts = inspect_file(path, where)
    try:
        with open_readonly(facts) as (conn, _):
            tables = tables_of(conn)
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{where}={path}: cannot be read as an SQLite database ({exc}).") from None
    if "goqite" not in tables and "crawl_jobs" not in tables:
        found = ", ".join(tables) or "none"
        raise AuditError(f"{where}={path}: has neither a goqite table nor a crawl_jobs table (tables: {found}); "
                         "audit needs at least one of them.")
    return facts


# The parent of a child is a row with no parent (NULL in Quaero, '' here).
_IS_PARENT = "(parent_id IS NULL OR parent_id = '')"


def is_dsn(target: str) -> bool:
    """``target`` names a PostgreSQL database (a URI, or key=value text with host= or dbname=), not a file."""
    return (target.lower().startswith(("postgresql://", "postgres://"))
            or ("=" in target and any(key in target for key in ("host=", "dbname="))))


def check_target(target: str, where: str = "--quaero-audit") -> None:
    """Usage checks for an SQLite file or a PostgreSQL DSN (see :mod:`pytest_quaero.core.postgresql.audit`)."""
    if is_dsn(target):
        from pytest_quaero.core.postgresql import audit as pg  # deferred: a file audit needs no driver

        try:
            pg.check_postgresql(target, where)
        except pg.AuditError as exc:
            raise AuditError(str(exc)) from None
    else:
        check_auditable(target, where)


def audit_label(target: str) -> str:
    """How the audit names ``target`` in item ids and output: a file's name, a DSN without its password."""
    if is_dsn(target):
        from pytest_quaero.core.postgresql import redact_dsn  # deferred: a file audit needs no PostgreSQL code

        return redact_dsn(target)
    return os.path.basename(target)


def audit(path: str, settings: Settings) -> AuditResult:
    """Run every audit query read-only and judge each criterion."""
    if is_dsn(path):
        from pytest_quaero.core.postgresql import audit as pg  # deferred: needs the extra

        try:
            return pg.audit_postgresql(path, settings)
        except pg.AuditError as exc:
            raise AuditError(str(exc)) from None
    facts = check_auditable(path)
    with open_readonly(facts) as (conn, how):
        tables = tables_of(conn)
        result = AuditResult(path=os.path.abspath(path), opened=how, tables=tables)
        result.facts["journal"] = "wal" if facts.wal_header else "rollback"
        if "goqite" in tables:
            _audit_queue(conn, settings.max_receive, result)
        if "crawl_jobs" in tables:
            _audit_jobs(conn, result)
        check = [row[0] for row in conn.execute("pragma quick_check").fetchall()]
    ok = check == ["ok"]
    result.verdicts["sqlite_integrity"] = Verdict(
        "sqlite_integrity", "SQLite quick_check", "ok" if ok else f"{len(check)} problems", "ok", ok,
        detail="" if ok else examples(check)).as_dict()
    _judge_wal(facts, result)
    for key, table in _NEEDS.items():
        if key not in result.verdicts:
            result.skipped[key] = f"no {table} table in {os.path.basename(path)}"
    return result


def _audit_queue(conn: sqlite3.Connection, max_receive: int, result: AuditResult) -> None:
    # Dead is goqite's own rule: received max_receive times AND its visibility timeout over (a
    # message on its last delivery is still in flight: that delivery may yet delete it). The
    # timeout is compared as its UTC instant (DUE), also when a goqite before v0.4.0 wrote it
    # with a UTC offset.
    rows = conn.execute(
        f"select queue, count(*), coalesce(sum(not {DUE}), 0), coalesce(sum(received >= ? and {DUE}), 0) "
        "from goqite group by queue order by queue",
        (max_receive,),
    ).fetchall()
    per_queue = {queue: {"messages": total, "in_flight": in_flight, "dead": dead}
                 for queue, total, in_flight, dead in rows}
    judge_queues(per_queue, max_receive, result)


def _audit_jobs(conn: sqlite3.Connection, result: AuditResult) -> None:
    cols = _columns(conn, "crawl_jobs")
    parents = int(conn.execute(f"select count(*) from crawl_jobs where {_IS_PARENT}").fetchone()[0])
    children = int(conn.execute(f"select count(*) from crawl_jobs where not {_IS_PARENT}").fetchone()[0])
    progress = progress_columns(cols, lambda k: f"COALESCE(json_extract(p.progress_json, '$.{k}'), 0)")
    record_tree(parents, children, cols, progress, result)
    orphan_rows = conn.execute(
        f"select c.id, c.parent_id from crawl_jobs c where not {_IS_PARENT.replace('parent_id', 'c.parent_id')} "
        f"and c.parent_id not in (select id from crawl_jobs where {_IS_PARENT}) limit 20").fetchall()
    orphans = int(conn.execute(
        f"select count(*) from crawl_jobs c where not {_IS_PARENT.replace('parent_id', 'c.parent_id')} "
        f"and c.parent_id not in (select id from crawl_jobs where {_IS_PARENT})").fetchone()[0])
    judge_orphans(orphans, orphan_rows, result)

    if progress is None:
        return
    rows = conn.execute(
        f"select p.id, p.status, {progress['total_urls']}, {progress['completed_urls']}, "
        f"{progress['failed_urls']}, {progress['pending_urls']}, count(c.id), "
        "coalesce(sum(c.status = 'completed'), 0), coalesce(sum(c.status = 'failed'), 0) "
        f"from crawl_jobs p left join crawl_jobs c on c.parent_id = p.id "
        f"where {_IS_PARENT.replace('parent_id', 'p.parent_id')} group by p.id order by p.id").fetchall()
    judge_parents(rows, result)


def _judge_wal(facts: FileFacts, result: AuditResult) -> None:
    frames = facts.wal_frames
    result.facts.update({"wal_bytes": facts.wal_bytes, "wal_frames": frames, "page_size": facts.page_size,
                         "shm_exists": facts.shm_exists})
    if not facts.wal_header:
        measured = "rollback journal (no WAL)"
    elif facts.wal_bytes == 0:
        measured = "no WAL left (checkpointed)"
    else:
        measured = f"-wal {facts.wal_bytes / 1024:.0f} KiB, {frames} frames"
    detail = ""
    if frames:
        detail = ("the -wal was left behind: its last connection did not close cleanly, or it is still open"
                  if facts.shm_exists else "the -wal was left behind by a connection that did not close")
        if frames > WAL_AUTOCHECKPOINT:
            detail += "; longer than wal_autocheckpoint: checkpoints were starved by readers or disabled"
    result.verdicts["wal_checkpoint"] = Verdict(
        "wal_checkpoint", "WAL Checkpoint State", measured, f"<= {WAL_AUTOCHECKPOINT} frames (wal_autocheckpoint)",
        frames <= WAL_AUTOCHECKPOINT, frames, detail).as_dict()
