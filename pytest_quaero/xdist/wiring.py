"""Wires pytest-xdist into a quaero session: the controller gets the scheduler, each worker its database.

The plugin calls :func:`configure` from ``pytest_configure``, in the controller and in
every worker, when pytest-xdist is active.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest

from pytest_quaero.session import QuaeroSession
from pytest_quaero.xdist.scheduling import XdistHooks

__all__ = ["configure", "worker_db_path"]


def configure(config: pytest.Config, session: QuaeroSession) -> None:
    """Controller: check ``--quaero-shared-db``, register the scheduler hooks. Worker: its database."""
    shared = config.getoption("quaero_shared_db")
    # what the controller sent this worker; xdist sets it on workers only
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None:
        if shared:
            _check_shared_option(config, shared, session)
        config.pluginmanager.register(XdistHooks(session), "quaero-xdist")
        return
    worker = str(workerinput.get("workerid", "gw0"))
    if shared:
        # deferred: only a --quaero-shared-db worker needs the shard nodes and the run machinery they import
        from pytest_quaero.xdist.nodes import make_nodes
        from pytest_quaero.xdist.shared_db import SharedDb

        shared_db = SharedDb(
            path=str(workerinput.get("quaero_shared_db") or os.path.abspath(shared)),
            worker=worker,
            workers=int(workerinput.get("workercount", 1)),
            session=str(workerinput.get("testrunuid", "session"))[:8],
        )
        session.make_scenario_nodes = functools.partial(make_nodes, shared_db)
    elif session.settings.db_path:
        # Two workers on one --quaero-db file would fight over one queue: a file each.
        session.settings = session.settings.replace(
            source=f"--quaero-db, per pytest-xdist worker {worker}",
            db_path=worker_db_path(session.settings.db_path, worker),
        )


def worker_db_path(path: str, worker: str) -> str:
    """The file an xdist worker uses for ``--quaero-db=path``: two workers never share one queue."""
    root, ext = os.path.splitext(path)
    return f"{root}-{worker}{ext or '.db'}"


def _check_shared_option(config: pytest.Config, shared: str, session: QuaeroSession) -> None:
    where = f"--quaero-shared-db={shared}"
    if not config.getoption("numprocesses"):
        raise pytest.UsageError(f"{where}: needs pytest-xdist workers; add -n N (N >= 1).")
    if config.getoption("dist") == "each":
        raise pytest.UsageError(f"{where}: cannot be used with --dist each; use the default --dist load.")
    if session.settings.db_path:
        source = session.settings.sources.get("db_path", "--quaero-db")
        raise pytest.UsageError(f"{where}: cannot be combined with a --quaero-db path (set by {source}); "
                                "choose one database option.")
    parent = os.path.dirname(os.path.abspath(shared)) or "."
    if not os.path.isdir(parent):
        raise pytest.UsageError(f"{where}: directory {parent} does not exist.")
    if os.path.exists(shared):
        # The controller holds no connection to the file, so reading its header is safe.
        with open(shared, "rb") as handle:
            header = handle.read(16)
        if header and header != b"SQLite format 3\x00":
            raise pytest.UsageError(f"{where}: the file exists and is not an SQLite database.")
