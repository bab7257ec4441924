from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_quaero.core import db
from pytest_quaero.core.seed import prepare_database
from pytest_quaero.core.settings import Settings

pytest_plugins = ["pytester"]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A real WAL-mode database file with the goqite and crawl_jobs tables, no connection open."""
    path = tmp_path / "quaero.db"
    prepare_database(path, Settings())
    return path


@pytest.fixture
def conn(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` with the default settings' pragmas."""
    conn = db.connect(path, Settings())
    yield conn
    conn.close()


@pytest.fixture(autouse=True)
def _no_ci_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytester runs inherit the environment: on GitHub Actions every inner session would
    # otherwise append its criteria tables to the real job summary
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
