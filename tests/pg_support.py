"""What the PostgreSQL tests share: the session's embedded server and a fresh schema per test.

Imported by ``tests/test_postgresql_*.py`` only; each of those skips (with the pip command
in the reason) when the ``postgresql`` extra is not installed. The server is the plugin's
own :func:`~pytest_quaero.core.postgresql.server.shared_server`: one per test process,
started once (about 2 s), stopped and deleted at exit.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_quaero.core.postgresql import INSTALL_HINT, missing_extra

MISSING = missing_extra(embedded=True)
#: apply to a module: ``pytestmark = needs_postgresql``
needs_postgresql = pytest.mark.skipif(MISSING is not None, reason=f"PostgreSQL backend: {MISSING}")

__all__ = ["INSTALL_HINT", "MISSING", "needs_postgresql", "pg_schema", "pg_server"]


@pytest.fixture(scope="session")
def pg_server() -> Any:
    from pytest_quaero.core.postgresql.server import shared_server

    return shared_server()


@pytest.fixture
def pg_schema(pg_server: Any) -> Iterator[Any]:
    """A schema of this test's own on the session's server (dropped after it), with the run's tables."""
    from pytest_quaero.core.postgresql.connect import connect
    from pytest_quaero.core.postgresql.queue import create_schema as create_queue_schema
    from pytest_quaero.core.postgresql.server import create_run_schema
    from pytest_quaero.core.postgresql.store import create_schema as create_store_schema
    from pytest_quaero.core.settings import Settings

    schema = create_run_schema(pg_server, secrets.token_hex(4))
    conn = connect(schema.dsn, Settings())
    create_queue_schema(conn)
    create_store_schema(conn)
    conn.close()
    yield schema
    schema.drop()
