"""Narrow races: bugs a light load run usually misses and an explored schedule finds.

Each broken class differs from the correct code in one place, with nothing (no sleep)
widening its race window: the window is one statement boundary, which two staggered,
polling workers rarely hit at the same moment and an explored schedule hits on purpose.

* lost counter update across transactions (:class:`LostUpdateStore`): the parent's
  counters are read in one transaction and written back, computed in Python, in another;
* two-statement claim (:class:`TwoStatementClaimQueue`): SELECT the next message, then
  UPDATE it by id, two autocommit statements;
* deferred read-then-write upgrade (:class:`DeferredClaimQueue`): the claim in a plain
  ``BEGIN`` that reads, then writes (SQLITE_BUSY_SNAPSHOT or an instant BUSY).

:class:`LockedClaimQueue` guards a two-statement claim with a Python lock: a wait outside
SQL, which an explored schedule cannot see through (the watchdog names it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_quaero.core.queue import DUE, Message, Queue
from pytest_quaero.core.retry import transaction
from pytest_quaero.core.scenarios import Scenario
from pytest_quaero.core.store import NOW, TERMINAL, JobStore

from .pools import endpoint_with

#: the shape the built-in explore scenario has: one parent's counters shared by every child
EXPLORE = Scenario("explore", 1, 4, 60.0, "Explore", shape=(
    ("workers", "2"), ("stagger", "0ms"), ("job_time", "0ms"), ("poll_interval", "10ms"),
    ("retry_backoff", "1ms"), ("visibility_timeout", "5s")))


class LostUpdateStore(JobStore):
    """finish_child that reads the parent's counters, then writes them back in a second transaction."""

    def finish_child(self, job_id: str, parent_id: str, *, failed: bool = False, error: str = "") -> bool:
        with transaction(self.conn, True):
            row = self.conn.execute("select status from crawl_jobs where id = ?", (job_id,)).fetchone()
            if row is None or row[0] in TERMINAL:
                return False
            self.conn.execute(f"update crawl_jobs set status = ?, completed_at = {NOW}, error = ? where id = ?",
                              ("failed" if failed else "completed", error[:500], job_id))
        completed, failed_count, pending = self.conn.execute(
            "select completed_urls, failed_urls, pending_urls from crawl_jobs where id = ?", (parent_id,)).fetchone()
        completed, failed_count, pending = completed + (not failed), failed_count + failed, pending - 1
        with transaction(self.conn, True):
            self.conn.execute(
                f"update crawl_jobs set completed_urls = ?, failed_urls = ?, pending_urls = ?, "
                f"status = case when ? <= 0 then 'completed' else status end, "
                f"completed_at = case when ? <= 0 then {NOW} else completed_at end where id = ?",
                (completed, failed_count, pending, pending, pending, parent_id))
        return True


class TwoStatementClaimQueue(Queue):
    """receive as two statements: SELECT the next visible message, then UPDATE it by id (no compare-and-set)."""

    def receive(self) -> Message | None:
        row = self.conn.execute(
            f"select id, body, received from goqite where queue = ? and received < ? and {DUE} "
            "order by priority desc, created limit 1", (self.name, self.max_receive)).fetchone()
        if row is None:
            return None
        self.conn.execute("update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), "
                          "received = received + 1 where id = ?", (self._timeout_offset, row[0]))
        return Message(row[0], bytes(row[1]), row[2] + 1)


class DeferredClaimQueue(Queue):
    """receive as a deferred transaction: BEGIN, SELECT the next visible message, UPDATE it, COMMIT.

    The SELECT takes a read snapshot that the UPDATE must upgrade: when another connection
    wrote in between (a delete, a send), SQLite refuses at once with BUSY_SNAPSHOT, or BUSY
    when it still holds the lock, and no busy_timeout helps (research §1). Its correct twin
    (:class:`ImmediateClaimQueue`) is the same code starting with ``BEGIN IMMEDIATE``.
    """

    begin = "BEGIN"

    def receive(self) -> Message | None:
        self.conn.execute(self.begin)
        try:
            row = self.conn.execute(
                f"select id, body, received from goqite where queue = ? and received < ? and {DUE} "
                "order by priority desc, created limit 1", (self.name, self.max_receive)).fetchone()
            if row is not None:
                self.conn.execute("update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), "
                                  "received = received + 1 where id = ?", (self._timeout_offset, row[0]))
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.rollback()
            raise
        return None if row is None else Message(row[0], bytes(row[1]), row[2] + 1)


class ImmediateClaimQueue(DeferredClaimQueue):
    """The same two-statement claim in ``BEGIN IMMEDIATE``: the write lock first, so nothing can upgrade."""

    begin = "BEGIN IMMEDIATE"


class LockedClaimQueue(TwoStatementClaimQueue):
    """The two-statement claim guarded by a Python lock shared by every worker: correct, but unexplorable."""

    claim_lock = threading.Lock()

    def receive(self) -> Message | None:
        with self.claim_lock:
            return super().receive()


@dataclass(frozen=True)
class NarrowCase:
    key: str
    bug: str
    #: the criterion the broken side must fail
    criterion: str
    broken: Callable[[], Any]
    correct: Callable[[], Any]


NARROW: tuple[NarrowCase, ...] = (
    NarrowCase("lost_counter_update", "parent counters read, then written back in another transaction",
               "hierarchy_integrity", lambda: endpoint_with(store_factory=LostUpdateStore),
               lambda: endpoint_with()),
    NarrowCase("two_statement_claim", "claim as SELECT, then UPDATE by id", "no_duplicate_processing",
               lambda: endpoint_with(TwoStatementClaimQueue), lambda: endpoint_with(Queue)),
    NarrowCase("deferred_upgrade", "claim as a deferred read-then-write transaction", "sqlite_busy_errors",
               lambda: endpoint_with(DeferredClaimQueue), lambda: endpoint_with(ImmediateClaimQueue)),
)

NARROW_BY_KEY = {case.key: case for case in NARROW}
