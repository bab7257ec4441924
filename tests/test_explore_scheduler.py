"""The explorer's scheduler on real threads and real SQLite files, without the run around it.

Each test starts a few named threads whose statements go through the observed connections
(``sqlite3.connect`` while :func:`observing` is on), with a :class:`Scheduler` deciding
their order: one token, so the database sees the statements in exactly the traced order;
the same strategy gives the same order and hash; a lock SQLite would wait for parks the
thread instead of failing; one it would not wait for reaches the code; every thread
parked means one gets its BUSY; a wait outside SQL is named by the watchdog.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_quaero.core import observed
from pytest_quaero.core.explore import clock
from pytest_quaero.core.explore.scheduler import Scheduler
from pytest_quaero.core.explore.strategies import RandomStrategy, Strategy, SystematicSearch, SystematicStrategy
from pytest_quaero.core.observed import observing

Body = Callable[[], None]


def run_explored(strategy: Strategy, bodies: dict[str, Body], watchdog: float = 5.0) -> tuple[Scheduler, dict]:
    """Run each body in a thread of its name under one schedule; ``(scheduler, {name: exception})``."""
    scheduler = Scheduler(strategy, list(bodies), watchdog=watchdog)
    errors: dict[str, BaseException] = {}

    def wrap(name: str, body: Body) -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - the test looks at what reached the code
            errors[name] = exc

    with observing():
        observed.SCHEDULER = scheduler
        try:
            threads = [threading.Thread(target=wrap, args=item, name=item[0], daemon=True) for item in bodies.items()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert not any(thread.is_alive() for thread in threads), "a thread of the schedule never finished"
        finally:
            scheduler.release()
            observed.SCHEDULER = None
    return scheduler, errors


def every_schedule(bodies: Callable[[], dict[str, Body]], bound: int = 1) -> list[tuple[Scheduler, dict]]:
    """Every schedule with up to ``bound`` forced switches (the systematic search), each on fresh bodies."""
    search = SystematicSearch(bound)
    runs = []
    for strategy in search:
        runs.append(run_explored(strategy, bodies()))
        search.ran(strategy)
        assert len(runs) < 500
    return runs


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "x.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("pragma journal_mode=wal")
    conn.execute("create table log (seq integer primary key, who text, i int)")
    conn.execute("create table counter (id int primary key, n int)")
    conn.execute("insert into counter values (1, 0)")
    conn.close()
    return path


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=0)


def writers(path: str, count: int = 5) -> dict[str, Body]:
    def writer(name: str) -> Body:
        def body() -> None:
            conn = _connect(path)
            for i in range(count):
                conn.execute("insert into log (who, i) values (?, ?)", (name, i))
            conn.close()
        return body
    return {name: writer(name) for name in ("A", "B", "C")}


def logged(path: str) -> list[tuple[str, int]]:
    conn = sqlite3.connect(path)
    try:
        rows = [(str(who), int(i)) for who, i in conn.execute("select who, i from log order by seq")]
        conn.execute("delete from log")
        conn.commit()
        return rows
    finally:
        conn.close()


def test_one_thread_at_a_time_in_the_traced_order_and_the_same_order_again(db: str) -> None:
    orders = []
    for seed in (1, 1, 2, 3):
        scheduler, errors = run_explored(RandomStrategy(seed), writers(db))
        assert not errors
        rows = logged(db)
        traced = [(match.group(1), int(match.group(2))) for line in scheduler.trace.steps
                  if (match := re.search(r"insert into log .* \('(\w)', (\d+)\)", line))]
        assert rows == traced  # the database saw the statements in exactly the schedule's order
        orders.append((rows, scheduler.trace.hash))
    assert orders[0] == orders[1]  # same seed: same order, same trace hash
    assert len({tuple(rows) for rows, _ in orders}) > 1  # other seeds interleave otherwise
    assert any(rows != sorted(rows) for rows, _ in orders)  # and not one thread after the other


def transfer(path: str) -> Body:
    def body() -> None:
        conn = _connect(path)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("update counter set n = n + 1 where id = 1")
        conn.execute("COMMIT")
        conn.close()
    return body


def test_a_lock_sqlite_would_wait_for_parks_the_thread_instead_of_failing(db: str) -> None:
    runs = every_schedule(lambda: {"A": transfer(db), "B": transfer(db)})
    assert all(not errors for _, errors in runs)  # busy_timeout 0, yet no schedule raised
    assert any("BUSY: waits until a transaction ends" in "\n".join(s.trace.steps) for s, _ in runs)
    conn = sqlite3.connect(db)
    assert conn.execute("select n from counter").fetchone()[0] == 2 * len(runs)
    conn.close()


def read_then_write(path: str) -> Body:
    def body() -> None:
        conn = _connect(path)
        conn.execute("BEGIN")  # deferred: the read takes a snapshot the write must upgrade
        conn.execute("select n from counter where id = 1").fetchall()
        try:
            conn.execute("update counter set n = n + 1 where id = 1")
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.rollback()
            conn.close()
    return body


def test_a_lock_sqlite_would_not_wait_for_reaches_the_code(db: str) -> None:
    runs = every_schedule(lambda: {"A": read_then_write(db), "B": read_then_write(db)})
    assert not runs[0][1]  # the schedule without a switch: one after the other, no error
    failed = [errors for _, errors in runs if errors]
    assert failed, "no schedule interleaved the two read-then-write transactions"
    codes = {getattr(exc, "sqlite_errorname", str(exc)) for errors in failed for exc in errors.values()}
    assert codes <= {"SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT"}, codes


def test_every_thread_parked_gives_one_its_busy(tmp_path: Path) -> None:
    paths = [str(tmp_path / f"{name}.db") for name in ("one", "two")]
    for path in paths:
        sqlite3.connect(path).execute("pragma journal_mode=wal").close()

    def crossing(first: str, second: str) -> Body:
        def body() -> None:
            a, b = _connect(first), _connect(second)
            a.execute("BEGIN IMMEDIATE")
            try:
                b.execute("BEGIN IMMEDIATE")
                b.execute("COMMIT")
            finally:
                a.execute("ROLLBACK")
                a.close()
                b.close()
        return body

    runs = every_schedule(lambda: {"A": crossing(*paths), "B": crossing(*reversed(paths))})
    deadlocked = [(s, errors) for s, errors in runs if "every worker waits" in "\n".join(s.trace.steps)]
    assert deadlocked, "no schedule crossed the two locks"
    for _, errors in deadlocked:
        assert len(errors) == 1  # exactly one got its BUSY, as if its busy_timeout expired; the other went on
        assert "locked" in str(next(iter(errors.values())))


def test_sql_now_the_python_clock_and_random_ids_are_the_schedules(db: str) -> None:
    seen: dict[str, list[object]] = {"A": [], "B": []}

    def reader(name: str) -> Body:
        def body() -> None:
            conn = _connect(db)
            for _ in range(3):
                seen[name].append(conn.execute("select strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()[0])
                seen[name].append(round(clock.now(), 3))
                seen[name].append(conn.execute("select hex(randomblob(16))").fetchone()[0].lower())  # goqite's ids
            conn.close()
        return body

    run_explored(RandomStrategy(7), {name: reader(name) for name in seen})
    once = {name: list(values) for name, values in seen.items()}
    for values in seen.values():
        values.clear()
    run_explored(RandomStrategy(7), {name: reader(name) for name in seen})
    assert seen == once  # the same instants (and random ids) in a replay
    texts = [str(value) for value in once["A"] if isinstance(value, str) and value.startswith("20")]
    assert all(text.startswith("2030-01-01T00:00:0") for text in texts), texts
    assert texts == sorted(texts) and len(set(texts)) == len(texts)  # it moves with each statement
    assert clock.now() > 1.7e9 and abs(clock.now() - clock.EPOCH) > 1  # outside a schedule: the machine's clock


def test_a_wait_outside_sql_is_named_by_the_watchdog(db: str) -> None:
    lock = threading.Lock()

    def holder() -> None:
        conn = _connect(db)
        with lock:  # another worker parked by the schedule holds it: nothing SQL can see
            conn.execute("select 1").fetchall()
            conn.execute("select 2").fetchall()
        conn.close()

    def waiter() -> None:
        conn = _connect(db)
        conn.execute("select 3").fetchall()
        with lock:
            conn.execute("select 4").fetchall()
        conn.close()

    failures = []
    search = SystematicSearch(1)
    for strategy in search:
        scheduler, errors = run_explored(strategy, {"holder": holder, "waiter": waiter}, watchdog=0.3)
        assert not errors  # released by the watchdog, both threads ran to their end
        search.ran(strategy)
        if scheduler.failure:
            failures.append(scheduler.failure)
            break
    assert failures, "no schedule parked the lock's holder"
    assert failures[0].startswith("waiter reached no scheduling point")
    assert "in waiter" in failures[0] and "with lock:" in failures[0]  # its stack: where it waits


def test_a_systematic_schedule_without_switches_runs_each_thread_as_long_as_it_can(db: str) -> None:
    _, errors = run_explored(SystematicStrategy(), writers(db, 3))
    assert not errors
    assert [who for who, _ in logged(db)] == ["A"] * 3 + ["B"] * 3 + ["C"] * 3


def test_with_connection_commits_are_scheduling_points(db: str) -> None:
    def body() -> None:
        conn = sqlite3.connect(db, timeout=0)  # legacy transactions: an implicit BEGIN before the INSERT
        with conn:
            conn.execute("insert into log (who, i) values ('A', 1)")
        conn.close()

    scheduler, errors = run_explored(SystematicStrategy(), {"A": body})
    assert not errors
    assert [line.split(": ", 1)[1] for line in scheduler.trace.steps[-2:]] == ["COMMIT -> ok", "CLOSE -> ok"]
    assert logged(db) == [("A", 1)]
