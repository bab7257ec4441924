"""Fixtures for users' own tests: the plugin's database, queue, store, pool and runs.

Imports of the queue, pool and run machinery happen inside the fixtures, so merely
having the plugin installed imports none of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_quaero.core.settings import Settings
from pytest_quaero.markers import scenario_from_marker
from pytest_quaero.session import carry_result, session_of

if TYPE_CHECKING:
    import sqlite3  # annotations only: importing the plugin must not load SQLite (bench_startup)

    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.core.pool import WorkerPool
    from pytest_quaero.core.queue import Queue
    from pytest_quaero.core.store import JobStore

__all__ = [
    "QuaeroDatabase", "quaero_db", "quaero_pool", "quaero_queue", "quaero_run", "quaero_settings", "quaero_store",
]


@dataclass
class QuaeroDatabase:
    """A prepared SQLite file (WAL, goqite and crawl_jobs tables) for one test."""

    path: Path
    settings: Settings
    _conn: sqlite3.Connection | None = field(default=None, repr=False)

    def connect(self) -> sqlite3.Connection:
        """A new connection with the settings' pragmas; the caller closes it."""
        # deferred: loaded only when a test requests this fixture
        from pytest_quaero.core import db

        return db.connect(self.path, self.settings)

    @property
    def conn(self) -> sqlite3.Connection:
        """The test's shared connection (opened on first use, closed at teardown)."""
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@pytest.fixture(scope="session")
def quaero_settings(pytestconfig: pytest.Config) -> Settings:
    """The session's effective settings (command line > environment > config file > ini > defaults)."""
    return session_of(pytestconfig).settings


@pytest.fixture
def quaero_db(tmp_path: Path, quaero_settings: Settings) -> Iterator[QuaeroDatabase]:
    """A fresh database file with the queue and store schemas, pragmas set and verified."""
    # deferred: loaded only when a test requests this fixture
    from pytest_quaero.core.run import prepare_database

    path = tmp_path / "quaero.db"
    prepare_database(path, quaero_settings)
    database = QuaeroDatabase(path, quaero_settings)
    yield database
    database.close()


@pytest.fixture
def quaero_queue(quaero_db: QuaeroDatabase) -> Queue:
    """The goqite-compatible queue on the test database's shared connection."""
    # deferred: loaded only when a test requests this fixture
    from pytest_quaero.core.queue import Queue

    s = quaero_db.settings
    return Queue(quaero_db.conn, s.queue_name, visibility_timeout=s.visibility_timeout, max_receive=s.max_receive)


@pytest.fixture
def quaero_store(quaero_db: QuaeroDatabase) -> JobStore:
    """The crawl-job store on the test database's shared connection."""
    # deferred: loaded only when a test requests this fixture
    from pytest_quaero.core.store import JobStore

    return JobStore(quaero_db.conn, begin_immediate=quaero_db.settings.begin_immediate)


@pytest.fixture
def quaero_pool(quaero_db: QuaeroDatabase) -> Iterator[WorkerPool]:
    """A worker pool on the test database, not started; stopped at teardown if it was."""
    # deferred: loaded only when a test requests this fixture
    from pytest_quaero.core.pool import WorkerPool

    pool = WorkerPool(str(quaero_db.path), quaero_db.settings)
    yield pool
    pool.stop()


@pytest.fixture
def quaero_run(request: pytest.FixtureRequest) -> Callable[..., RunResult]:
    """``quaero_run("light", workers=4)`` runs a scenario and returns its judged RunResult.

    With no arguments it runs what the test's ``@pytest.mark.quaero_scenario`` says.
    The result carries ``verdicts`` and ``passed``; it never raises on a failed criterion.
    """
    harness = session_of(request.config).harness

    def run(scenario: Any = None, **overrides: Any) -> RunResult:
        marker = request.node.get_closest_marker("quaero_scenario")
        marker_args: tuple[Any, ...] = marker.args if marker else ()
        marker_kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
        if scenario is not None:
            marker_args = (scenario,)
        marker_kwargs.update(overrides)
        chosen, settings = scenario_from_marker(
            request.config, marker_args, marker_kwargs, where=f"quaero_run() in {request.node.nodeid}"
        )
        from pytest_quaero.extension import Extensions  # deferred: imports the run machinery

        # the requesting test's ihook: conftest hooks of its own folder apply
        result = harness.run(chosen, settings, extensions=Extensions.for_node(request.node))
        result.extra["origin"] = request.node.nodeid
        carry_result(request.node, result)
        return result

    return run
