"""Opt-in timing of a scenario run, from the outside: nothing here is in the plugin's hot path.

The plugin already has the injection points a user's own queue uses
(``run_scenario(endpoint_factory=..., pool_factory=...)``), so the benchmarks time every
queue and store call through wrappers handed in there. A run without them executes
exactly the code a user's run executes; the cost of timing is paid only by the
instrumented run, which is why its jobs/s is never the one reported.

:class:`TimedEndpointFactory` is picklable, so it works for process workers too: each
endpoint writes its totals to a JSON file in ``out_dir`` when it is closed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_quaero.core.pool import Endpoint, WorkerPool, open_endpoint

__all__ = ["TimedEndpointFactory", "WindowPool", "collect"]

# The statement that moves the parent's counters inside JobStore.finish_child: everything
# traced before it is "save completed", it and the COMMIT are "progress update".
_PROGRESS_MARK = "completed_urls = completed_urls"


class _Totals:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] += seconds
        self.count[key] += 1


class _TimedQueue:
    """The endpoint's queue, every call timed; gaps between receives tell work from idling."""

    def __init__(self, inner: Any, totals: _Totals) -> None:
        self._inner, self._t = inner, totals
        self._last_return: float | None = None
        self._last_got: bool = False
        self._in_job: float = 0.0  # store/queue time spent inside the current job's gap

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def note_job_call(self, seconds: float) -> None:
        self._in_job += seconds

    def close_gap(self, now: float) -> None:
        if self._last_return is None:
            return
        gap = now - self._last_return
        if self._last_got:
            # Time between handing a message to the pool and asking for the next one,
            # minus the store and delete calls timed inside it: the pool's own work.
            self._t.add("bookkeeping", max(0.0, gap - self._in_job))
        else:
            self._t.add("idle", gap)
        self._in_job = 0.0

    def receive(self) -> Any:
        started = time.perf_counter()
        self.close_gap(started)
        message = self._inner.receive()
        done = time.perf_counter()
        self._t.add("receive" if message is not None else "receive_empty", done - started)
        self._last_return, self._last_got = done, message is not None
        return message

    def delete(self, message_id: str) -> bool:
        started = time.perf_counter()
        try:
            return self._inner.delete(message_id)
        finally:
            elapsed = time.perf_counter() - started
            self._t.add("delete", elapsed)
            self.note_job_call(elapsed)

    def send(self, body: bytes, delay: float = 0.0, priority: int = 0) -> str:
        started = time.perf_counter()
        try:
            return self._inner.send(body, delay, priority)
        finally:
            self._t.add("send", time.perf_counter() - started)


class _TimedStore:
    def __init__(self, inner: Any, queue: _TimedQueue, conn: Any, totals: _Totals) -> None:
        self._inner, self._queue, self._conn, self._t = inner, queue, conn, totals

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _timed(self, key: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            elapsed = time.perf_counter() - started
            self._t.add(key, elapsed)
            self._queue.note_job_call(elapsed)

    def mark_running(self, job_id: str) -> None:
        self._timed("save_running", lambda: self._inner.mark_running(job_id))

    def record_attempt_failure(self, job_id: str, error: str) -> None:
        self._timed("save_running", lambda: self._inner.record_attempt_failure(job_id, error))

    def save_parent(self, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        self._inner.save_parent(*args, **kwargs)
        self._t.add("save_parent", time.perf_counter() - started)

    def create_child(self, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            self._inner.create_child(*args, **kwargs)
        finally:
            self._t.add("create_child", time.perf_counter() - started)

    def finish_child(self, job_id: str, parent_id: str, **kwargs: Any) -> bool:
        marks: list[float] = []

        def trace(sql: str) -> None:
            if _PROGRESS_MARK in sql:
                marks.append(time.perf_counter())

        self._conn.set_trace_callback(trace)
        started = time.perf_counter()
        try:
            return bool(self._inner.finish_child(job_id, parent_id, **kwargs))
        finally:
            done = time.perf_counter()
            self._conn.set_trace_callback(None)
            split = marks[-1] if marks else done
            self._t.add("save_completed", split - started)
            self._t.add("progress_update", done - split)
            self._queue.note_job_call(done - started)


class TimedEndpointFactory:
    """``endpoint_factory`` that times every call; picklable for process workers."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def __call__(self, db_path: str, settings: Any) -> Endpoint:
        inner = open_endpoint(db_path, settings)
        totals = _Totals()
        queue = _TimedQueue(inner.queue, totals)
        store = _TimedStore(inner.store, queue, inner.queue.conn, totals)
        opened = time.perf_counter()

        def close() -> None:
            now = time.perf_counter()
            queue.close_gap(now)
            inner.close()
            totals.add("lifetime", now - opened)
            name = f"{os.getpid()}-{threading.get_ident()}-{id(totals)}.json"
            Path(self.out_dir, name).write_text(json.dumps({"seconds": totals.seconds, "count": totals.count}))

        return Endpoint(queue=queue, store=store, close=close)


def collect(out_dir: str) -> tuple[dict[str, float], dict[str, int], int]:
    """Totals over every endpoint of a run: seconds, counts, and how many endpoints were workers."""
    seconds: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    workers = 0
    for path in Path(out_dir).glob("*.json"):
        data = json.loads(path.read_text())
        is_worker = "receive" in data["seconds"] or "receive_empty" in data["seconds"]
        workers += is_worker
        for key, value in data["seconds"].items():
            seconds[("worker_" if is_worker else "producer_") + key] += value
        for key, value in data["count"].items():
            count[("worker_" if is_worker else "producer_") + key] += value
    return dict(seconds), dict(count), workers


class WindowPool(WorkerPool):
    """A WorkerPool that also notes the first receive and the last finished job it reports.

    Reads the events the run folds anyway; used by the benchmarks to report the
    processing rate without the fixed costs (pool start, drain detection) around it.
    """

    first: float | None = None
    last: float | None = None

    def poll_events(self) -> list[Any]:
        events = super().poll_events()
        for event in events:
            if event[0] == "job":
                if self.first is None or event[4] < self.first:
                    self.first = event[4]
                if self.last is None or event[5] > self.last:
                    self.last = event[5]
        return events
