"""send -> receive -> delete cycles per second: the plugin's queue against raw SQL and SQLite's limit.

Three things run side by side in every repetition, each on its own fresh WAL file on disk
(synchronous NORMAL, busy_timeout 10 s, the plugin's default pragmas):

* ``SQLite limit``: one connection, one-row INSERT, UPDATE (by primary key) and DELETE,
  each in its own transaction, on a plain ``integer primary key`` table: what one
  process can commit through Python's sqlite3 on this machine, before any queue design.
* ``raw goqite``: the three goqite statements (insert ... returning id; the one-statement
  claim UPDATE ... WHERE id = (SELECT ...) RETURNING; delete), straight ``conn.execute``
  calls on goqite's real schema (trigger and index included), no wrapper.
* ``plugin``: :class:`pytest_quaero.core.queue.Queue` on :func:`pytest_quaero.core.db.connect`, every
  operation through :meth:`pytest_quaero.core.retry.Retrier.call`, exactly as the worker pool
  and the producers use them.

raw and plugin run with 1, 2 and 4 workers, as threads (one connection each) and as
spawned processes. Each worker loops send, receive, delete of a ~150-byte JSON body
(the size of a real job message) for the same number of seconds.

    python benchmarks/bench_queue.py            # 5 repetitions x 2 s per variant (~3 min)
    python benchmarks/bench_queue.py --quick    # 3 x 0.35 s (< 30 s)
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Bench, fresh_db, machine_line, med, print_table, ratio_cell

from pytest_quaero.core import db
from pytest_quaero.core.pool import encode_job
from pytest_quaero.core.queue import Queue, create_schema
from pytest_quaero.core.retry import Retrier
from pytest_quaero.core.settings import Settings

QUEUE_NAME = "bench"
SETTINGS = Settings(queue_name=QUEUE_NAME)
BODY = encode_job("abcd1234-child-15-100", "abcd1234-parent-15", "http://test-server/parent-15/page-100")

# goqite's statements as the plugin sends them (goqite.go, SQLite flavour), literal here so the
# baseline cannot pick up any change made to queue.py.
RAW_SEND = (
    "insert into goqite (queue, body, timeout, priority) "
    "values (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), ?) returning id"
)
RAW_RECEIVE = (
    "update goqite set timeout = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?), received = received + 1 "
    "where id = (select id from goqite where queue = ? and strftime('%Y-%m-%dT%H:%M:%fZ', 'now') >= timeout "
    "and received < ? order by priority desc, created limit 1) returning id, body, received"
)
RAW_DELETE = "delete from goqite where queue = ? and id = ?"
TIMEOUT_OFFSET = f"{SETTINGS.visibility_timeout:+.3f} seconds"

WORKERS = (1, 2, 4)
MODES = ("thread", "process")


# ------------------------------------------------------------------ the loops


def _loop(kind: str, path: str, seconds: float) -> tuple[int, int, float]:
    """Open one connection the way ``kind`` does and cycle for ``seconds``.

    Returns (cycles, busy errors, CPU seconds of this thread): CPU per cycle shows the
    plugin's own overhead even when a noisy neighbour moves the wall-clock rates around.
    """
    cycles = 0
    cpu_started = time.thread_time()
    if kind == "raw":
        conn = db.connect(path, SETTINGS)  # same pragmas; only the statements differ
        execute = conn.execute
        send_args = (QUEUE_NAME, BODY, "+0.000 seconds", 0)
        receive_args = (TIMEOUT_OFFSET, QUEUE_NAME, SETTINGS.max_receive)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            execute(RAW_SEND, send_args).fetchall()
            rows = execute(RAW_RECEIVE, receive_args).fetchall()
            if rows:
                execute(RAW_DELETE, (QUEUE_NAME, rows[0][0]))
            cycles += 1
        cpu = time.thread_time() - cpu_started
        conn.close()
        return cycles, 0, cpu
    conn = db.connect(path, SETTINGS)
    queue = Queue(conn, QUEUE_NAME, visibility_timeout=SETTINGS.visibility_timeout, max_receive=SETTINGS.max_receive)
    retrier = Retrier(SETTINGS.retry_attempts, SETTINGS.retry_backoff, busy_timeout_ms=SETTINGS.busy_timeout_ms)
    call = retrier.call

    def send() -> str:
        return queue.send(BODY)

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        call("queue_send", send)
        message = call("queue_receive", queue.receive)
        if message is not None:
            call("queue_delete", lambda message_id=message.id: queue.delete(message_id))
        cycles += 1
    cpu = time.thread_time() - cpu_started
    conn.close()
    return cycles, sum(stats.busy_events for stats in retrier.stats.values()), cpu


def _process_main(kind: str, path: str, seconds: float, ready: Any, go: Any, results: Any) -> None:
    ready.put(None)
    go.wait()
    results.put(_loop(kind, path, seconds))


def run_workers(kind: str, mode: str, workers: int, path: str, seconds: float) -> tuple[float, int, float]:
    """Cycles per second of ``workers`` concurrent loops (all start together), busy errors, CPU us/cycle."""
    if mode == "thread":
        out: list[tuple[int, int, float]] = []
        barrier = threading.Barrier(workers)

        def body() -> None:
            barrier.wait()
            out.append(_loop(kind, path, seconds))

        threads = [threading.Thread(target=body) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        # spawn, as the plugin's process mode; start-up is outside the measured window.
        context = multiprocessing.get_context("spawn")
        ready, results, go = context.Queue(), context.Queue(), context.Event()
        procs = [context.Process(target=_process_main, args=(kind, path, seconds, ready, go, results))
                 for _ in range(workers)]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=60)
        go.set()
        out = [results.get(timeout=60 + seconds) for _ in procs]
        for proc in procs:
            proc.join()
    cycles = sum(c for c, _, _ in out)
    return cycles / seconds, sum(b for _, b, _ in out), 1e6 * sum(cpu for _, _, cpu in out) / max(1, cycles)


def sqlite_limit(path: str, seconds: float) -> float:
    """INSERT, UPDATE, DELETE of one row, each its own transaction, one connection: cycles/s."""
    conn = db.connect(path, SETTINGS)
    conn.execute("create table t (id integer primary key, n integer not null, body blob not null)")
    execute = conn.execute
    cycles = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        rowid = execute("insert into t (n, body) values (0, ?)", (BODY,)).lastrowid
        execute("update t set n = n + 1 where id = ?", (rowid,))
        execute("delete from t where id = ?", (rowid,))
        cycles += 1
    conn.close()
    return cycles / seconds


def sqlite_statements(path: str, rows: int) -> dict[str, float]:
    """Per-statement tx/s (research §11's shape): ``rows`` INSERTs, then UPDATEs, then DELETEs."""
    conn = db.connect(path, SETTINGS)
    conn.execute("create table t (id integer primary key, n integer not null, body blob not null)")
    execute = conn.execute
    out: dict[str, float] = {}
    started = time.perf_counter()
    for _ in range(rows):
        execute("insert into t (n, body) values (0, ?)", (BODY,))
    out["INSERT"] = rows / (time.perf_counter() - started)
    started = time.perf_counter()
    for rowid in range(1, rows + 1):
        execute("update t set n = n + 1 where id = ?", (rowid,))
    out["UPDATE"] = rows / (time.perf_counter() - started)
    started = time.perf_counter()
    for rowid in range(1, rows + 1):
        execute("delete from t where id = ?", (rowid,))
    out["DELETE"] = rows / (time.perf_counter() - started)
    conn.close()
    return out


def _wal(directory: Path, name: str) -> str:
    path = fresh_db(directory, name)
    db.prepare(path, SETTINGS)  # WAL is persistent in the file: set once, as run_scenario does
    return path


def _prepared(directory: Path, name: str) -> str:
    path = _wal(directory, name)
    conn = db.connect(path, SETTINGS)
    create_schema(conn)
    conn.close()
    return path


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    bench = Bench(__doc__.splitlines()[0], reps=5, quick_reps=3)
    bench.parser.add_argument("--seconds", type=float, default=None, help="seconds per variant (2; --quick 0.35)")
    args = bench.parse(argv)
    seconds = args.seconds or (0.35 if args.quick else 2.0)
    assert bench.dir is not None
    variants = [(kind, mode, n) for mode in MODES for kind in ("raw", "plugin") for n in WORKERS]
    rates: dict[Any, list[float]] = {v: [] for v in variants}
    busy: dict[Any, int] = {v: 0 for v in variants}
    cpu: dict[Any, list[float]] = {v: [] for v in variants}
    limit: list[float] = []
    statements: dict[str, list[float]] = {"INSERT": [], "UPDATE": [], "DELETE": []}
    print(f"bench_queue: {args.reps} repetitions x {seconds:g} s per variant; {machine_line()}", flush=True)
    started = time.perf_counter()
    try:
        for rep in range(args.reps):
            limit.append(sqlite_limit(_wal(bench.dir, "limit"), seconds))
            for statement, rate in sqlite_statements(_wal(bench.dir, "statements"),
                                                     4000 if args.quick else 20000).items():
                statements[statement].append(rate)
            # Alternate the order every repetition so neither kind always runs on a warmer machine.
            order = variants if rep % 2 == 0 else list(reversed(variants))
            for variant in order:
                kind, mode, workers = variant
                path = _prepared(bench.dir, f"{kind}-{mode}-{workers}")
                rate, errors, cpu_us = run_workers(kind, mode, workers, path, seconds)
                rates[variant].append(rate)
                busy[variant] += errors
                cpu[variant].append(cpu_us)
            print(f"  repetition {rep + 1}/{args.reps} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    finally:
        bench.cleanup()

    raw1 = rates[("raw", "thread", 1)]
    print()
    print("SQLite alone (one connection, one row per transaction), tx/s min / median:",
          ", ".join(f"{k} {min(v):,.0f} / {med(v):,.0f}" for k, v in statements.items()))
    print()
    rows: list[list[object]] = [[
        "SQLite limit (INSERT; UPDATE; DELETE)", "1", "-", f"{min(limit):,.0f}", f"{med(limit):,.0f}", "-", "-",
        "1.00 / 1.00", "-", "-",
    ]]
    for variant in variants:
        kind, mode, workers = variant
        values = rates[variant]
        same_raw = rates[("raw", mode, workers)]
        rows.append([
            "raw goqite SQL" if kind == "raw" else "plugin Queue + Retrier", str(workers), mode,
            f"{min(values):,.0f}", f"{med(values):,.0f}",
            ratio_cell([a / b for a, b in zip(values, same_raw, strict=True)]) if kind == "plugin" else "-",
            ratio_cell([a / b for a, b in zip(values, raw1, strict=True)]),
            ratio_cell([a / b for a, b in zip(values, limit, strict=True)]),
            f"{min(cpu[variant]):.0f} / {med(cpu[variant]):.0f}",
            str(busy[variant]),
        ])
    print_table(["variant", "workers", "mode", "cycles/s min", "cycles/s median", "x raw same shape",
                 "x raw 1 thread", "x SQLite limit", "CPU us/cycle", "busy errors"], rows)
    print()
    print("Ratios are min / median over the repetitions of the ratio of figures measured in the same repetition.")
    print("CPU us/cycle: CPU time of the worker threads/processes (Python and SQLite) per cycle, min / median.")
    print("Targets: plugin with 2 workers >= 1.0x raw goqite SQL and >= 0.5x SQLite limit.")
    for mode in MODES:
        plugin2 = rates[("plugin", mode, 2)]
        raw2 = rates[("raw", mode, 2)]
        cpu_ratios = [a / b for a, b in zip(cpu[("plugin", mode, 2)], cpu[("raw", mode, 2)], strict=True)]
        print(f"  plugin, 2 {mode} workers: x raw 2 {mode} workers "
              f"{ratio_cell([a / b for a, b in zip(plugin2, raw2, strict=True)])}"
              f", x raw 1 thread {ratio_cell([a / b for a, b in zip(plugin2, raw1, strict=True)])}"
              f", x SQLite limit {ratio_cell([a / b for a, b in zip(plugin2, limit, strict=True)])}"
              f"; CPU per cycle x raw {ratio_cell(cpu_ratios)}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
