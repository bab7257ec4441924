"""The gallery's table and its conftest sources: one broken variant per lock-bug class.

Each source is a whole ``conftest.py`` as a team would write it, through the public
hooks and the public API only (``from pytest_quaero import ...``); the comments in it
are the team's reasons, the ``Variant.bug`` line says what is really wrong. Every
variant runs with the template's default settings; only 7c adds process workers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BROKEN", "CORRECT", "INNER_ARGS", "Variant", "item_outcomes", "run_args"]

#: plugins that must not change an inner run: random order, cache files, other projects' fixtures
INNER_ARGS = ("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")


@dataclass(frozen=True)
class Variant:
    """One row of the gallery: a conftest.py, the scenario it runs and what must fail."""

    key: str
    name: str
    #: the lock-bug class, as the README table names it
    bug: str
    scenario: str
    #: criterion keys that must all fail (broken), or () for a twin that must pass everything
    expected: tuple[str, ...]
    conftest: str
    #: command-line options beyond ``--quaero-scenario`` (the defaults are the point: keep this short)
    args: tuple[str, ...] = ()

    @property
    def broken(self) -> bool:
        return bool(self.expected)

    @property
    def builtin(self) -> bool:
        """No hook of the user's: the plugin's own queue, store and simulated work."""
        return "def pytest_quaero_" not in self.conftest


def run_args(variant: Variant, junit: Path | str, json_path: Path | str | None = None) -> list[str]:
    """The inner ``pytest`` arguments: the variant's scenario, its options, JUnit (and JSON) out."""
    args = [*INNER_ARGS, f"--quaero-scenario={variant.scenario}", *variant.args, f"--junitxml={junit}"]
    if json_path is not None:
        args.append(f"--quaero-json={json_path}")
    return args


def item_outcomes(junit: Path | str) -> dict[str, tuple[str, str]]:
    """``{'quaero[light]::queue_deletion': ('failed', message), ...}`` from a JUnit file."""
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).iter("testcase"):
        name = f"{case.attrib.get('classname', '')}::{case.attrib.get('name', '')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.attrib.get("message") or "").splitlines()[0] if child.attrib.get("message") else ""
        outcomes[name] = (outcome, message)
    return outcomes


# ---------------------------------------------------------------- 1: an ack that deletes the head of the queue

ACK_OLDEST = '''
"""Our queue: goqite's table and receive, and an ack written for one worker per queue."""
from pytest_quaero import Queue


class HeadAckQueue(Queue):
    def delete(self, message_id):
        # One worker per queue in production, taking messages oldest first: the message it
        # acknowledges is always the head of the queue, so the ack removes the head.
        cursor = self.conn.execute(
            "delete from goqite where id = (select id from goqite where queue = ? order by created limit 1)",
            (self.name,),
        )
        return cursor.rowcount == 1


def pytest_quaero_make_queue(settings, connection):
    return HeadAckQueue(connection(), settings.queue_name, visibility_timeout=settings.visibility_timeout,
                        max_receive=settings.max_receive)
'''

# ---------------------------------------------------------------- 2: parent counters read, computed, written back

COUNTERS_RMW = '''
"""Our store: a child's completion, then its parent's progress, each a short statement of its own."""
from pytest_quaero import JobStore

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


class StepwiseStore(JobStore):
    def finish_child(self, job_id, parent_id, *, failed=False, error=""):
        status = "failed" if failed else "completed"
        # The child first: the status guard turns a redelivered job into a no-op (a duplicate).
        cursor = self.conn.execute(
            f"update crawl_jobs set status = ?, completed_at = {NOW}, error = ? "
            "where id = ? and status not in ('completed', 'failed')",
            (status, error[:500], job_id),
        )
        if cursor.rowcount == 0:
            return False
        # Then the parent's progress, computed in Python where it is easy to read and to log;
        # no long transaction spanning both rows, so no worker waits on another's completion.
        done, failures, pending = self.conn.execute(
            "select completed_urls, failed_urls, pending_urls from crawl_jobs where id = ?", (parent_id,)
        ).fetchone()
        done, failures, pending = done + (not failed), failures + failed, max(0, pending - 1)
        finished = pending == 0
        self.conn.execute(
            f"update crawl_jobs set completed_urls = ?, failed_urls = ?, pending_urls = ?, "
            f"status = case when ? then 'completed' else status end, "
            f"completed_at = case when ? then {NOW} else completed_at end where id = ?",
            (done, failures, pending, finished, finished, parent_id),
        )
        return True


def pytest_quaero_make_store(settings, connection):
    return StepwiseStore(connection(), begin_immediate=settings.begin_immediate)
'''

# ---------------------------------------------------------------- 3: a handler holding the write lock while it works

HANDLER_HOLDS_LOCK = '''
"""Our job handler: fetch the page and store it, all or nothing."""
import random
import sqlite3
import threading

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
_local = threading.local()


def _pages(db_path):
    # One connection per worker thread, kept for the worker's life.
    if getattr(_local, "path", None) != db_path:
        conn = sqlite3.connect(db_path, timeout=10, isolation_level=None)
        conn.execute("create table if not exists pages (job_id text primary key, url text not null, "
                     "status text not null, fetched_at text)")
        _local.conn, _local.path = conn, db_path
    return _local.conn


def pytest_quaero_handle_job(job, context):
    conn = _pages(context.db_path)
    # One transaction around the whole fetch: a crash mid-fetch leaves no half-stored page,
    # and IMMEDIATE so the final write can never fail on a lock upgrade.
    conn.execute("begin immediate")
    try:
        conn.execute("insert or replace into pages (job_id, url, status) values (?, ?, 'fetching')",
                     (job.job_id, job.url))
        low, high = context.settings.job_time
        context.pause(random.uniform(low, high))  # the fetch itself
        conn.execute(f"update pages set status = 'fetched', fetched_at = {NOW} where job_id = ?", (job.job_id,))
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return True
'''

#: 3's correct twin: the same page table, written in one short statement after the fetch
HANDLER_SHORT_WRITE = '''
"""Our job handler: fetch the page, then store it in one statement."""
import random
import threading

from pytest_quaero import connect

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
_local = threading.local()


def _pages(context):
    if getattr(_local, "path", None) != context.db_path:
        conn = connect(context.db_path, context.settings)
        conn.execute("create table if not exists pages (job_id text primary key, url text not null, "
                     "status text not null, fetched_at text)")
        _local.conn, _local.path = conn, context.db_path
    return _local.conn


def pytest_quaero_handle_job(job, context):
    low, high = context.settings.job_time
    context.pause(random.uniform(low, high))  # the fetch, holding no lock
    _pages(context).execute(
        f"insert or replace into pages (job_id, url, status, fetched_at) values (?, ?, 'fetched', {NOW})",
        (job.job_id, job.url),
    )
    return True
'''

# ---------------------------------------------------------------- 4: completions dropped by a lossy dedupe filter

LOSSY_DEDUPE = '''
"""Our store: a page reached by two crawl jobs is stored once."""
import hashlib
import threading

from pytest_quaero import JobStore

# Pages this process has stored, by URL fingerprint, per database file. Ten bits: one crawl is
# a few hundred pages, and the set must stay small enough to check without touching SQLite.
_stored: dict = {}
_stored_lock = threading.Lock()


def _fingerprint(url):
    return int(hashlib.md5(url.encode()).hexdigest(), 16) % 1024


class DedupingStore(JobStore):
    def __init__(self, conn, db_path, **kwargs):
        super().__init__(conn, **kwargs)
        self.db_path = db_path

    def finish_child(self, job_id, parent_id, *, failed=False, error=""):
        if failed:
            return super().finish_child(job_id, parent_id, failed=True, error=error)
        row = self.conn.execute("select url from crawl_jobs where id = ?", (job_id,)).fetchone()
        fingerprint = _fingerprint(row[0]) if row else None
        with _stored_lock:
            seen = _stored.setdefault(self.db_path, set())
            if fingerprint in seen:
                return True  # that page is stored already: nothing left to do for this job
        finished = super().finish_child(job_id, parent_id)
        if finished and fingerprint is not None:
            with _stored_lock:
                seen.add(fingerprint)
        return finished


def pytest_quaero_make_store(settings, db_path, connection):
    return DedupingStore(connection(), db_path, begin_immediate=settings.begin_immediate)
'''

# ---------------------------------------------------------------- 5: the message sent before its job row exists

SEND_BEFORE_ROW = '''
"""Our store: publish the job first, then write its bookkeeping row."""
from pytest_quaero import JobStore


class PublishFirstStore(JobStore):
    def create_child(self, job_id, parent_id, url, name="", enqueue=None):
        # The message goes out first so the crawl starts while we write the row; two short
        # statements instead of one transaction holding the write lock for both.
        if enqueue is not None:
            enqueue()
        self.conn.execute(
            "insert into crawl_jobs (id, parent_id, job_type, name, url, status) "
            "values (?, ?, 'crawler_url', ?, ?, 'pending')",
            (job_id, parent_id, name, url),
        )


def pytest_quaero_make_store(settings, connection):
    return PublishFirstStore(connection(), begin_immediate=settings.begin_immediate)
'''

# ---------------------------------------------------------------- 6: a receive that swallows "database is locked"

# goqite's receive, as a team copies it into its own code
_GOQITE_RECEIVE = '''
RECEIVE = (
    "update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), received = received + 1 "
    "where id = (select id from goqite where queue = ? and received < ? "
    "and timeout <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') order by priority desc, created limit 1) "
    "returning id, body, received"
)
'''

SWALLOWED_BUSY = '''
"""Our queue: goqite's, with a receive that never blocks a worker."""
import sqlite3

from pytest_quaero import Message, Queue
''' + _GOQITE_RECEIVE + '''

class PollingQueue(Queue):
    def __init__(self, conn, db_path, settings):
        super().__init__(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                         max_receive=settings.max_receive)
        # Receiving is a poll: a busy database means "nothing for us right now" and the worker
        # polls again, so the poll gets a connection of its own that never waits on a lock.
        self.poller = sqlite3.connect(db_path, timeout=0, isolation_level=None)

    def receive(self):
        try:
            rows = self.poller.execute(
                RECEIVE, (f"+{self.visibility_timeout} seconds", self.name, self.max_receive)).fetchall()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                return None
            raise
        if not rows:
            return None
        message_id, body, received = rows[0]
        return Message(message_id, bytes(body), received)

    def close(self):
        self.poller.close()


def pytest_quaero_make_queue(settings, db_path, connection):
    return PollingQueue(connection(), db_path, settings)
'''

# ---------------------------------------------------------------- 7: narrow races that need the stress scenario

SHORT_TIMEOUT = '''
"""Our queue: goqite's, on a connection of its own that fails fast on a lock."""
import sqlite3

from pytest_quaero import Queue


class FailFastQueue(Queue):
    def close(self):
        self.conn.close()


def pytest_quaero_make_queue(settings, db_path):
    # A worker must never hang behind a lock for seconds: 50ms, then the error goes up and the
    # caller's retry with backoff takes over.
    conn = sqlite3.connect(db_path, timeout=0.05, isolation_level=None)
    return FailFastQueue(conn, settings.queue_name, visibility_timeout=settings.visibility_timeout,
                         max_receive=settings.max_receive)
'''

DEFERRED_CLAIM = '''
"""Our queue: goqite's table, a claim that reads the next message and takes it in one transaction."""
from pytest_quaero import Message, Queue

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"


class TransactionalClaimQueue(Queue):
    def receive(self):
        # Select and update inside one transaction, so nobody can take the message in between.
        self.conn.execute("begin")
        try:
            row = self.conn.execute(
                f"select id from goqite where queue = ? and received < ? and timeout <= {NOW} "
                "order by priority desc, created limit 1", (self.name, self.max_receive)).fetchone()
            if row is None:
                self.conn.execute("commit")
                return None
            rows = self.conn.execute(
                f"update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), received = received + 1 "
                "where id = ? returning id, body, received",
                (f"+{self.visibility_timeout} seconds", row[0])).fetchall()
            self.conn.execute("commit")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("rollback")
            raise
        message_id, body, received = rows[0]
        return Message(message_id, bytes(body), received)


def pytest_quaero_make_queue(settings, connection):
    return TransactionalClaimQueue(connection(), settings.queue_name,
                                   visibility_timeout=settings.visibility_timeout, max_receive=settings.max_receive)
'''

THREAD_LOCK_CLAIM = '''
"""Our queue: goqite's table, claims serialized by a lock so two workers never take one message."""
import threading

from pytest_quaero import Message, Queue

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
_claim_lock = threading.Lock()


class LockedClaimQueue(Queue):
    def receive(self):
        # Find the next message and mark it taken; the lock makes the pair atomic for every worker.
        with _claim_lock:
            row = self.conn.execute(
                f"select id, body, received from goqite where queue = ? and received < ? and timeout <= {NOW} "
                "order by priority desc, created limit 1", (self.name, self.max_receive)).fetchone()
            if row is None:
                return None
            self.conn.execute(
                "update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), received = received + 1 "
                "where id = ?", (f"+{self.visibility_timeout} seconds", row[0]))
        message_id, body, received = row
        return Message(message_id, bytes(body), received + 1)


def pytest_quaero_make_queue(settings, connection):
    return LockedClaimQueue(connection(), settings.queue_name, visibility_timeout=settings.visibility_timeout,
                            max_receive=settings.max_receive)
'''

BUILTIN = '''
"""No hooks: pytest-quaero's own goqite queue, job store and simulated work."""
'''


BROKEN: tuple[Variant, ...] = (
    Variant("1", "head-of-queue ack", "an ack (delete) that removes the oldest message, not the one it was given",
            "light", ("queue_deletion",), ACK_OLDEST),
    Variant("2", "read-modify-write counters",
            "parent progress counters read, computed in Python and written back, apart from the child's update",
            "stress", ("hierarchy_integrity",), COUNTERS_RMW),
    Variant("3", "handler holds BEGIN IMMEDIATE",
            "a job handler that keeps a write transaction open on its own connection while it works",
            "light", ("write_lock_hold",), HANDLER_HOLDS_LOCK),
    Variant("4", "lossy dedupe drops completions",
            "a store whose finish_child returns as if done and writes nothing for ~3% of jobs",
            "light", ("completion_rate", "hierarchy_integrity"), LOSSY_DEDUPE),
    Variant("5", "publish before persist", "the message sent before its child row exists (two transactions)",
            "light", ("hierarchy_integrity",), SEND_BEFORE_ROW),
    # 6 on light met a lock in 1 run of 8: two staggered workers leave the lock free ~98% of the time
    Variant("6", "receive swallows busy",
            "a receive on a busy_timeout=0 connection that catches 'database is locked' and returns None",
            "stress", ("sqlite_busy_errors",), SWALLOWED_BUSY),
    Variant("7a", "50ms busy_timeout queue", "a queue connection with a short busy_timeout of its own (not swallowed)",
            "stress", ("sqlite_busy_errors",), SHORT_TIMEOUT),
    Variant("7b", "deferred read-then-write claim",
            "a claim as BEGIN (deferred); SELECT; UPDATE; COMMIT: SQLITE_BUSY_SNAPSHOT on the upgrade",
            "stress", ("sqlite_busy_errors",), DEFERRED_CLAIM),
    Variant("7c", "threading.Lock claim, processes",
            "a two-statement claim guarded by a threading.Lock, which each worker process has its own of",
            "stress", ("no_duplicate_processing",), THREAD_LOCK_CLAIM, ("--quaero-worker-mode=process",)),
)

CORRECT: tuple[Variant, ...] = (
    Variant("ok-light", "built-in queue and store", "none (the correct queue)", "light", (), BUILTIN),
    Variant("ok-stress", "built-in queue and store", "none (the correct queue)", "stress", (), BUILTIN),
    Variant("ok-3", "handler writes after the fetch", "none (3's twin: one short write, no lock held while working)",
            "light", (), HANDLER_SHORT_WRITE),
)
