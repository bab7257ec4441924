"""Contention from outside the pool: lock-holding writers, long readers, producer bursts.

``--quaero-contention=SPEC`` adds loads that run beside the worker pool, each in its
own process (``multiprocessing`` spawn, so no SQLite state crosses a fork), the way
other services share a production database file. The SPEC is a ``;``-separated list
of loads, each ``KIND[:KEY=VALUE,...]``::

    writer:hold=200ms,every=1s      BEGIN IMMEDIATE, hold the write lock 200ms, commit; every 1s
    reader:snapshot=5s,gap=0s       BEGIN; SELECT ...; keep that snapshot 5s (checkpoint starvation)
    burst:producers=8,every=2s,messages=10
                                    every 2s, 8 concurrent producers (threads, one connection
                                    each) send 10 messages each to a side queue

A kind may appear more than once (two readers whose snapshots overlap starve the
checkpointer for good). Bursts write to the side queue ``quaero-contention`` of the same
``goqite`` table (same pages, same index) and clear it after each burst, so the run's
own queue and its accounting are untouched.

While the loads run, a thread samples the size of the ``-wal`` file with ``os.stat``
(never ``open``: a second open/close of the database file in this process would drop
the POSIX locks the process's SQLite connections hold). When the pool has stopped,
``PRAGMA wal_checkpoint(TRUNCATE)`` runs once with the loads still active (a reader
holding a snapshot makes it return busy=1) and once after they stopped. Everything
lands in ``result.extra["contention"]``:

``spec``
    the SPEC as given
``loads``
    per load: ``kind``, ``params`` (seconds / counts), ``pid``, ``iterations``,
    ``busy_errors`` (the load's own lock errors, not the pool's), ``lock_held_seconds``
    and ``lock_wait_seconds`` (writers), ``snapshot_seconds`` (readers), ``messages`` (bursts), ``errors``
``wal_samples``
    ``[[offset_seconds, wal_bytes], ...]`` (offsets since the run started)
``wal_max_bytes`` / ``wal_final_bytes``
    the largest sample, and the size after the final checkpoint
``checkpoint_under_load`` / ``checkpoint_after``
    ``{"busy": 0|1, "log_frames": n, "checkpointed_frames": n}`` as SQLite returned them
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

from pytest_quaero.core import db
from pytest_quaero.core.disturbance import RunContext, split_spec
from pytest_quaero.core.fields import parse_duration, parse_whole
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.retry import classify
from pytest_quaero.core.settings import Settings

__all__ = ["ContentionError", "ContentionLoad", "LoadSpec", "parse_contention"]

SIDE_QUEUE = "quaero-contention"

#: kind -> {key: (default, parser name)}; "d" durations, "n" whole numbers >= 1
_KINDS: dict[str, dict[str, tuple[Any, str]]] = {
    "writer": {"hold": (0.2, "d"), "every": (1.0, "d"), "start": (0.0, "d")},
    "reader": {"snapshot": (5.0, "d"), "gap": (0.0, "d"), "start": (0.0, "d")},
    "burst": {"producers": (8, "n"), "every": (2.0, "d"), "messages": (10, "n"), "start": (0.0, "d")},
}
_EXAMPLE = "writer:hold=200ms,every=1s;reader:snapshot=5s;burst:producers=8,every=2s"


class ContentionError(ValueError):
    """A contention SPEC that cannot be used; the message names the part and what is allowed."""


@dataclass(frozen=True)
class LoadSpec:
    """One external load: its kind and its parameters (seconds, counts)."""

    kind: str
    params: dict[str, Any]
    text: str


def parse_contention(text: str, *, option: str = "--quaero-contention") -> list[LoadSpec]:
    """``'writer:hold=200ms,every=1s;reader:snapshot=5s'`` -> load specs."""
    def settings_help(kind: str) -> str:
        return ", ".join(k + "=" + ("DURATION" if t == "d" else "N") for k, (_, t) in _KINDS[kind].items())

    loads: list[LoadSpec] = []
    for part, kind, given in split_spec(text, _KINDS, option=option, noun="load", example=_EXAMPLE,
                                        error=ContentionError, settings_help=settings_help):
        where = f"{option}={text}: {part!r}"
        keys = _KINDS[kind]
        params = {key: default for key, (default, _) in keys.items()}
        for key, value in given.items():
            kind_of = keys[key][1]
            try:
                if kind_of == "d":
                    params[key] = parse_duration(value)
                else:
                    params[key] = parse_whole(value)
                    if params[key] < 1:
                        raise ValueError(value)
            except ValueError:
                allowed = "a duration such as 200ms or 1s" if kind_of == "d" else "a whole number >= 1"
                raise ContentionError(f"{where}: invalid {key}={value!r}; allowed: {allowed}") from None
        if kind == "writer" and params["hold"] <= 0:
            raise ContentionError(f"{where}: hold must be > 0")
        if kind == "writer" and params["every"] < params["hold"]:
            raise ContentionError(f"{where}: every ({params['every']:g}s) must be >= hold ({params['hold']:g}s)")
        if kind == "reader" and params["snapshot"] <= 0:
            raise ContentionError(f"{where}: snapshot must be > 0")
        if kind == "burst" and params["every"] <= 0:
            raise ContentionError(f"{where}: every must be > 0")
        loads.append(LoadSpec(kind, params, part))
    return loads


# ------------------------------------------------------------------ the load processes


def _load_settings(settings: Settings) -> Settings:
    # An outside service waits for locks as patiently as a well-configured one, so the
    # load keeps disturbing even when the pool under test runs with busy_timeout 0.
    return settings.replace(source="contention load", busy_timeout_ms=max(settings.busy_timeout_ms, 5000))


def _load_main(spec: LoadSpec, channel: Connection[Any, Any], stop: ProcessEvent) -> None:
    """Body of one load process: wait for the database, connect, say ready, disturb until stopped, report.

    The process is spawned before the run starts its clock and told which database to
    use only then, so interpreter start-up never counts as the run's time.
    """
    message = channel.recv()
    if message[0] != "go":
        return
    _, db_path, settings = message
    stats: dict[str, Any] = {"kind": spec.kind, "params": spec.params, "pid": os.getpid(), "iterations": 0,
                             "busy_errors": 0, "lock_held_seconds": 0.0, "lock_wait_seconds": 0.0,
                             "snapshot_seconds": 0.0, "messages": 0, "errors": []}
    lock = threading.Lock()

    def failed(exc: BaseException) -> None:
        with lock:
            if classify(exc):
                stats["busy_errors"] += 1
            elif len(stats["errors"]) < 10:
                stats["errors"].append(f"{type(exc).__name__}: {exc}")

    conn = db.connect(db_path, settings)
    channel.send(("ready", os.getpid()))
    try:
        if stop.wait(spec.params["start"]):
            return
        while not stop.is_set():
            began = time.monotonic()
            try:
                if spec.kind == "writer":
                    conn.execute("BEGIN IMMEDIATE")
                    locked_at = time.monotonic()
                    stats["lock_wait_seconds"] += locked_at - began
                    try:
                        conn.execute("insert into goqite (queue, body) values (?, x'00')", (SIDE_QUEUE,))
                        conn.execute("delete from goqite where queue = ?", (SIDE_QUEUE,))
                        # Hold the lock the full time even if asked to stop: a holder that lets
                        # go early would disturb less than the SPEC says.
                        time.sleep(spec.params["hold"])
                        conn.execute("COMMIT")
                    finally:
                        if conn.in_transaction:
                            conn.rollback()
                    stats["lock_held_seconds"] += time.monotonic() - locked_at
                elif spec.kind == "reader":
                    conn.execute("BEGIN")
                    try:
                        conn.execute("select count(*) from goqite").fetchall()
                        stop.wait(spec.params["snapshot"])
                    finally:
                        conn.execute("COMMIT")
                    stats["snapshot_seconds"] += time.monotonic() - began
                else:
                    _burst(db_path, settings, spec, stats, failed)
                    conn.execute("delete from goqite where queue = ?", (SIDE_QUEUE,))
                stats["iterations"] += 1
            except sqlite3.Error as exc:
                failed(exc)
            pause = spec.params["gap"] if spec.kind == "reader" else spec.params["every"] - (time.monotonic() - began)
            stop.wait(max(0.0, pause))
    except Exception as exc:  # noqa: BLE001 - whatever ends the load is reported to the run, never a silent death
        stats["errors"].append(f"load crashed: {type(exc).__name__}: {exc}")
    finally:
        conn.close()
        stats["lock_held_seconds"] = round(stats["lock_held_seconds"], 4)
        stats["lock_wait_seconds"] = round(stats["lock_wait_seconds"], 4)
        stats["snapshot_seconds"] = round(stats["snapshot_seconds"], 4)
        channel.send(("done", stats))


def _burst(db_path: str, settings: Settings, spec: LoadSpec, stats: dict[str, Any],
           failed: Callable[[BaseException], None]) -> None:
    def produce() -> None:
        try:
            conn = db.connect(db_path, settings)
        except sqlite3.Error as exc:
            failed(exc)
            return
        try:
            for _ in range(spec.params["messages"]):
                try:
                    conn.execute("insert into goqite (queue, body) values (?, x'00')", (SIDE_QUEUE,))
                    stats["messages"] += 1
                except sqlite3.Error as exc:
                    failed(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=produce, daemon=True) for _ in range(spec.params["producers"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# ------------------------------------------------------------------ the disturbance


def wal_size(db_path: str) -> int:
    """Bytes in ``DB-wal``, by ``os.stat`` only (0 when there is none)."""
    try:
        return os.stat(db_path + "-wal").st_size
    except FileNotFoundError:
        return 0


def checkpoint(db_path: str, settings: Settings, wait_ms: int) -> dict[str, Any]:
    """``PRAGMA wal_checkpoint(TRUNCATE)`` on a connection of its own, waiting at most ``wait_ms``."""
    started = time.monotonic()
    try:
        conn = db.connect(db_path, settings)
    except sqlite3.Error as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        db.set_busy_timeout(conn, wait_ms)
        busy, log_frames, done = db.wal_checkpoint(conn)
        return {"busy": busy, "log_frames": log_frames, "checkpointed_frames": done,
                "seconds": round(time.monotonic() - started, 4), "wal_bytes": wal_size(db_path)}
    except sqlite3.Error as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": round(time.monotonic() - started, 4)}
    finally:
        conn.close()


@dataclass
class ContentionLoad:
    """The loads of one SPEC, started beside one run (a :class:`~pytest_quaero.core.disturbance.Disturbance`)."""

    loads: list[LoadSpec]
    spec: str = ""
    #: seconds between WAL size samples
    sample_interval: float = 0.05
    #: longest the under-load checkpoint may wait for readers, milliseconds
    checkpoint_wait_ms: int = 1000
    _run: RunContext | None = field(default=None, repr=False)
    _processes: list[tuple[LoadSpec, BaseProcess, Connection[Any, Any]]] = field(default_factory=list, repr=False)
    _stop: ProcessEvent | None = field(default=None, repr=False)
    _sampler: threading.Thread | None = field(default=None, repr=False)
    _sampling: threading.Event = field(default_factory=threading.Event, repr=False)
    _samples: list[list[float]] = field(default_factory=list, repr=False)
    _report: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_spec(cls, text: str) -> ContentionLoad:
        return cls(parse_contention(text), spec=text)

    def prepare(self) -> None:
        """Spawn the load processes ahead of the run (idempotent); they wait to be told the database.

        Called before ``run_scenario`` (the gate does), the ~0.3s a spawned interpreter
        needs to start is not part of the run's execution time; :meth:`start` calls it
        otherwise. :meth:`close` ends processes of a run that never started.
        """
        if self._processes:
            return
        context = multiprocessing.get_context("spawn")
        stop = self._stop = context.Event()
        try:
            for load in self.loads:
                parent_end, child_end = context.Pipe(duplex=True)
                process = context.Process(target=_load_main, args=(load, child_end, stop),
                                          name=f"quaero-contention-{load.kind}", daemon=True)
                process.start()
                child_end.close()
                self._processes.append((load, process, parent_end))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """End the load processes without a report (a run that failed before :meth:`start`)."""
        if self._stop is not None:
            self._stop.set()
        self._sampling.set()
        for _, process, channel in self._processes:
            with contextlib.suppress(OSError, ValueError):
                channel.send(("stop",))
            process.join(2)
            if process.is_alive():
                process.kill()

    def start(self, run: RunContext) -> None:
        self._run = run
        self._report = {"spec": self.spec or ";".join(load.text for load in self.loads), "loads": [], "errors": []}
        self.prepare()
        self._sampler = threading.Thread(target=self._sample, name="quaero-wal-sampler", daemon=True)
        self._sampler.start()
        settings = _load_settings(run.settings)
        for _, _, channel in self._processes:
            channel.send(("go", run.db_path, settings))
        # The run's producers start only once every load is connected and disturbing.
        for load, _, channel in self._processes:
            if not channel.poll(60):
                self._report["errors"].append(f"{load.text}: load process did not start within 60s")
                continue
            channel.recv()
        run.mark("contention_started", label=f"Contention loads started: {self._report['spec']}")

    def _sample(self) -> None:
        assert self._run is not None
        while True:
            self._samples.append([round(time.monotonic() - self._run.t0, 4), wal_size(self._run.db_path)])
            if self._sampling.wait(self.sample_interval):
                return

    def stop(self) -> None:
        run = self._run
        if run is None:
            return
        try:
            wait_ms = min(run.settings.busy_timeout_ms, self.checkpoint_wait_ms)
            under_load = checkpoint(run.db_path, run.settings, wait_ms)
            if self._stop is not None:
                self._stop.set()
            for load, process, channel in self._processes:
                limit = load.params.get("hold", 0) + load.params.get("snapshot", 0) + 30
                stats: dict[str, Any] = {"kind": load.kind, "params": load.params, "pid": process.pid,
                                         "errors": ["load process reported nothing"]}
                try:
                    if channel.poll(limit):
                        kind, payload = channel.recv()
                        if kind == "done":
                            stats = payload
                except (EOFError, OSError) as exc:
                    stats["errors"] = [f"load process channel: {exc}"]
                process.join(5)
                if process.is_alive():
                    process.kill()
                    process.join(5)
                    stats.setdefault("errors", []).append("killed after not stopping")
                stats["text"] = load.text
                self._report["loads"].append(stats)
                channel.close()
            after = checkpoint(run.db_path, run.settings, run.settings.busy_timeout_ms)
            run.mark("contention_stopped", label="Contention loads stopped; WAL checkpointed")
            self._report["checkpoint_under_load"] = under_load
            self._report["checkpoint_after"] = after
        except Exception as exc:  # noqa: BLE001 - a disturbance reports its own failure; it never breaks the run
            self._report["errors"].append(f"{type(exc).__name__}: {exc}")
        finally:
            self._sampling.set()
            if self._sampler is not None:
                self._sampler.join(5)
            # One last sample after the final checkpoint, so the series ends where the WAL did.
            self._samples.append([round(time.monotonic() - run.t0, 4), wal_size(run.db_path)])
            for _, process, _ in self._processes:
                if process.is_alive():
                    process.kill()

    def record(self, result: RunResult) -> None:
        samples = self._samples
        if len(samples) > 1000:  # keep the report small: every k-th sample, plus the last
            step = -(-len(samples) // 1000)
            samples = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
        self._report["wal_samples"] = samples
        self._report["wal_max_bytes"] = max((int(s[1]) for s in self._samples), default=0)
        self._report["wal_final_bytes"] = int(self._samples[-1][1]) if self._samples else 0
        result.extra["contention"] = self._report
