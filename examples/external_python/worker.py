#!/usr/bin/env python3
"""A goqite worker pool as a standalone program, speaking pytest-quaero's worker protocol v1.

It imports nothing from pytest-quaero (only the standard library), to show that the protocol is
all a worker in any language needs: read the ``QUAERO_*`` environment, write JSON lines to the
file descriptor in ``QUAERO_EVENTS_FD``, start when stdin says so, stop on SIGTERM.

    pytest --quaero-scenario=light --quaero-worker-command="python3 examples/external_python/worker.py"

Each worker is a thread with its own SQLite connection: receive (goqite's claim: one UPDATE ...
RETURNING), mark the job running, simulated work, complete the job and move its parent's counters
in one transaction, delete the message; the store writes retried with exponential backoff, the
delete with its own policy, every lock error reported. Environment variables: see the README.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
RECEIVE = (
    f"update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), received = received + 1 "
    f"where id = (select id from goqite where queue = ? and received < ? and timeout <= {NOW} "
    f"order by priority desc, created limit 1) returning id, body, received"
)
MARK_RUNNING = (f"update crawl_jobs set status = 'running', started_at = {NOW}, error = '' "
                f"where id = ? and status not in ('completed', 'failed')")
FINISH_CHILD = f"update crawl_jobs set status = 'completed', completed_at = {NOW}, error = '' where id = ?"
PARENT_PROGRESS = (
    f"update crawl_jobs set completed_urls = completed_urls + 1, pending_urls = pending_urls - 1, "
    f"status = case when pending_urls - 1 <= 0 then 'completed' else status end, "
    f"completed_at = case when pending_urls - 1 <= 0 then {NOW} else completed_at end "
    f"where id = ? and pending_urls > 0"
)
LOCK_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (primary codes)


class Config:
    def __init__(self, env: dict[str, str]) -> None:
        self.db_path = env["QUAERO_DB_PATH"]
        self.queue = env.get("QUAERO_QUEUE_NAME", "quaero_jobs")
        self.workers = int(env.get("QUAERO_WORKERS", "2"))
        self.base = int(env.get("QUAERO_WORKER_INDEX_BASE", "0"))
        self.stagger = float(env.get("QUAERO_STAGGER_MS", "500")) / 1000
        self.poll = float(env.get("QUAERO_POLL_INTERVAL_MS", "1000")) / 1000
        self.busy_timeout_ms = int(env.get("QUAERO_BUSY_TIMEOUT_MS", "10000"))
        self.journal_mode = env.get("QUAERO_JOURNAL_MODE", "WAL")
        self.synchronous = env.get("QUAERO_SYNCHRONOUS", "NORMAL")
        self.cache_mb = int(env.get("QUAERO_CACHE_SIZE_MB", "64"))
        self.immediate = env.get("QUAERO_BEGIN_IMMEDIATE", "true") == "true"
        self.retries = int(env.get("QUAERO_RETRY_ATTEMPTS", "5"))
        self.backoff = float(env.get("QUAERO_RETRY_BACKOFF_MS", "100")) / 1000
        self.delete_retries = int(env.get("QUAERO_DELETE_RETRY_ATTEMPTS", "3"))
        self.delete_backoff = float(env.get("QUAERO_DELETE_RETRY_BACKOFF_MS", "200")) / 1000
        self.visibility = float(env.get("QUAERO_VISIBILITY_TIMEOUT_MS", "300000")) / 1000
        self.max_receive = int(env.get("QUAERO_MAX_RECEIVE", "3"))
        low, _, high = env.get("QUAERO_JOB_TIME_MS", "5..20").partition("..")
        self.job_time = (float(low) / 1000, float(high or low) / 1000)
        self.seed = int(env.get("QUAERO_SEED", "0"))


class Events:
    """One writer for every thread: whole lines, never interleaved."""

    def __init__(self, fd: int) -> None:
        self.stream = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        self.lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, separators=(",", ":"))
        with self.lock:
            self.stream.write(line + "\n")


def connect(config: Config) -> sqlite3.Connection:
    # autocommit (isolation_level=None): this program writes its own BEGIN, as the Go driver does
    conn = sqlite3.connect(config.db_path, isolation_level=None, timeout=0, check_same_thread=False)
    conn.execute(f"pragma busy_timeout = {config.busy_timeout_ms}")
    conn.execute(f"pragma journal_mode = {config.journal_mode}")
    conn.execute(f"pragma synchronous = {config.synchronous}")
    conn.execute(f"pragma cache_size = {-config.cache_mb * 1024}")
    return conn


def lock_code(exc: sqlite3.Error) -> str | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in LOCK_CODES:
        return None
    return getattr(exc, "sqlite_errorname", None) or f"SQLITE_{code}"


class Worker(threading.Thread):
    def __init__(self, index: int, config: Config, events: Events, start_at: list[float],
                 stop: threading.Event, cancel: threading.Event) -> None:
        super().__init__(name=f"worker-{index}", daemon=True)
        self.index, self.config, self.events = index, config, events
        self.start_at, self.stop, self.cancel = start_at, stop, cancel

    def emit(self, event: str, **fields: Any) -> None:
        self.events.emit(event, worker=self.index, ts=time.time(), **fields)

    def op(self, name: str, call: Callable[[], Any], attempts: int, backoff: float) -> Any:
        for attempt in range(1, attempts + 1):
            began = time.monotonic()
            try:
                value = call()
            except sqlite3.Error as exc:
                code = lock_code(exc)
                if code is None:
                    self.emit("operation", operation=name, attempts=attempt, outcome="error")
                    raise
                retried = attempt < attempts
                self.emit("lock_error", operation=name, code=code, result_code=exc.sqlite_errorcode,
                          attempt=attempt, retried=retried, waited_ms=(time.monotonic() - began) * 1000)
                if not retried:
                    self.emit("operation", operation=name, attempts=attempt, outcome="exhausted")
                    raise
                time.sleep(backoff * 2 ** (attempt - 1))
            else:
                self.emit("operation", operation=name, attempts=attempt, outcome="ok")
                return value
        raise AssertionError("unreachable")

    def run(self) -> None:
        config = self.config
        delay = self.start_at[0] + self.index * config.stagger - time.time()
        if self.stop.wait(max(0.0, delay)):
            self.emit("worker_stopped", busy_ms=0)
            return
        busy, conn = 0.0, None
        try:
            # the pragmas take a lock in rollback-journal mode: retried and reported like any write
            conn = self.op("connect", lambda: connect(config), config.retries, config.backoff)
            self.emit("worker_started")
            while not self.stop.is_set():
                rows = self.op("queue_receive", lambda: conn.execute(
                    RECEIVE, (f"+{config.visibility:.3f} seconds", config.queue, config.max_receive)).fetchall(),
                    config.retries, config.backoff)
                if not rows:
                    self.stop.wait(config.poll)
                    continue
                began = time.monotonic()
                self.job(conn, *rows[0])
                busy += time.monotonic() - began
        except Exception as exc:  # noqa: BLE001 - a worker that dies must say so
            self.emit("crashed", message=f"{type(exc).__name__}: {exc}", origin="worker.py")
        finally:
            self.emit("worker_stopped", busy_ms=busy * 1000)
            if conn is not None:
                conn.close()

    def job(self, conn: sqlite3.Connection, message_id: str, body: bytes, received: int) -> None:
        config, claimed = self.config, time.time()
        job = json.loads(body)
        self.emit("claimed", message_id=message_id, job_id=job["id"], delivery=received)
        started = time.monotonic()
        try:
            self.op("save_job", lambda: conn.execute(MARK_RUNNING, (job["id"],)), config.retries, config.backoff)
            seed = int(hashlib.sha256(f"{config.seed}:{job['id']}".encode()).hexdigest()[:12], 16)
            if self.cancel.wait(random.Random(seed).uniform(*config.job_time)):
                return  # cut short by a second SIGTERM: left unfinished, redelivered later
            finished = self.op("progress_update", lambda: self.finish(conn, job["id"], job["parent_id"]),
                               config.retries, config.backoff)
            self.op("queue_delete", lambda: conn.execute("delete from goqite where queue = ? and id = ?",
                                                         (config.queue, message_id)),
                    config.delete_retries, config.delete_backoff)
        except sqlite3.Error as exc:  # escaped: the message stays for redelivery
            self.emit("job_finished", message_id=message_id, job_id=job["id"], outcome="error", error=str(exc),
                      duration_ms=(time.monotonic() - started) * 1000)
            return
        self.emit("job_finished", message_id=message_id, job_id=job["id"],
                  outcome="completed" if finished else "duplicate", duration_ms=(time.monotonic() - started) * 1000,
                  latency_ms=max(0.0, claimed - float(job.get("created_at", claimed))) * 1000)

    def finish(self, conn: sqlite3.Connection, job_id: str, parent_id: str) -> bool:
        conn.execute("begin immediate" if self.config.immediate else "begin")
        try:
            row = conn.execute("select status from crawl_jobs where id = ?", (job_id,)).fetchone()
            if row is None or row[0] in ("completed", "failed"):
                conn.execute("rollback")
                return False
            conn.execute(FINISH_CHILD, (job_id,))
            conn.execute(PARENT_PROGRESS, (parent_id,))
            conn.execute("commit")
            return True
        except BaseException:
            if conn.in_transaction:
                conn.execute("rollback")
            raise


def main() -> int:
    config = Config(dict(os.environ))
    events = Events(int(os.environ["QUAERO_EVENTS_FD"]))
    stop, cancel = threading.Event(), threading.Event()

    def on_term(signum: int, frame: object) -> None:
        (cancel if stop.is_set() else stop).set()  # the second SIGTERM abandons the jobs in progress

    signal.signal(signal.SIGTERM, on_term)
    probe = connect(config)
    pragmas = {name: probe.execute(f"pragma {name}").fetchone()[0]
               for name in ("journal_mode", "synchronous", "busy_timeout")}
    probe.close()
    events.emit("hello", protocol=1, language="python", runtime=platform.python_version(),
                libraries={"sqlite3": sqlite3.sqlite_version}, sqlite_version=sqlite3.sqlite_version,
                pid=os.getpid(), workers=config.workers, pragmas=pragmas)
    line = sys.stdin.readline()
    if not line:
        return 0  # the plugin went away before the start
    start_at = [float(json.loads(line)["at"])]
    workers = [Worker(config.base + local, config, events, start_at, stop, cancel) for local in range(config.workers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        while worker.is_alive():
            worker.join(0.2)  # short joins: the main thread must run to take SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
