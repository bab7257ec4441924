"""The reference Go worker runs the plugin's own store statements; this pins which.

``examples/go_goqite/testdata/plugin_sql.json`` holds the statements as the plugin builds
them. This test fails when the plugin's change (the file is then stale); the Go module's
``go test`` fails when the Go copy drifts from the file. Rewrite it after a deliberate change:
``QUAERO_WRITE_GO_CONTRACT=1 pytest tests/test_go_sql_contract.py``, then make ``go test`` pass.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

CONTRACT = Path(__file__).resolve().parent.parent / "examples" / "go_goqite" / "testdata" / "plugin_sql.json"


def current_statements() -> dict[str, dict[str, str]]:
    from pytest_quaero.core import store

    pytest.importorskip("psycopg", reason="the PostgreSQL store's statements need the postgresql extra")
    from pytest_quaero.core.postgresql import store as pg_store

    return {
        "sqlite": {"mark_running": store._SQLITE.mark_running, "child_status": store._CHILD_STATUS_SQL,
                   "finish_child": store._FINISH_CHILD_SQL, "parent_progress": store._SQLITE.parent_progress},
        "postgresql": {"mark_running": pg_store._STATEMENTS.mark_running, "finish": pg_store._FINISH_SQL},
    }


def test_the_go_workers_statement_file_is_the_plugins() -> None:
    statements = current_statements()
    if os.environ.get("QUAERO_WRITE_GO_CONTRACT"):
        CONTRACT.write_text(json.dumps(statements, indent=2, sort_keys=True) + "\n")
    assert json.loads(CONTRACT.read_text()) == statements, (
        f"{CONTRACT} is stale: the plugin's store statements changed. Rewrite it with "
        "QUAERO_WRITE_GO_CONTRACT=1 pytest tests/test_go_sql_contract.py, then make examples/go_goqite's go test pass")
