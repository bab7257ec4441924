"""The one SQLite file of ``--quaero-shared-db``, and the folder through which the workers meet.

Every worker process holds a :class:`SharedDb`: the file prepared once per session (under
an inter-process lock, :mod:`filelock`), the start barrier the shards wait at, and the
session's exchange folder where each shard leaves its result (or its error) for the judge.
Imported only on a worker of a ``--quaero-shared-db`` session.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from pytest_quaero.core.results_json import write_text_atomic
from pytest_quaero.core.run import prepare_database
from pytest_quaero.core.settings import Settings

__all__ = ["BARRIER_TIMEOUT", "LOCK_TIMEOUT", "SharedDb", "write_json"]

#: how long a shard waits at the start barrier for the other workers' shards
BARRIER_TIMEOUT = 60.0
#: how long a worker waits for another to finish preparing the file
LOCK_TIMEOUT = 120.0


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so that a reader (the judge, polling) never sees half a file."""
    # durable=False: a scratch file of this session, not worth an fsync
    write_text_atomic(path, json.dumps(data), durable=False)


@dataclass(frozen=True)
class SharedDb:
    """This worker's part in a ``--quaero-shared-db`` session."""

    #: the shared SQLite file, absolute (the controller resolved it for every worker)
    path: str
    #: this process's xdist worker id, ``gw0`` ...
    worker: str
    #: how many workers the session started
    workers: int
    #: a short id of the test run, the same on every worker: part of each shard's queue name
    session: str

    @property
    def worker_ids(self) -> list[str]:
        return [f"gw{k}" for k in range(self.workers)]

    def directory(self, config: pytest.Config, scenario: str) -> Path:
        """The session's exchange folder: the basetemp every worker's basetemp lives in."""
        # pytest has no public way to reach the basetemp outside a fixture
        factory = config._tmp_path_factory  # type: ignore[attr-defined]  # private pytest attribute, see above
        folder: Path = factory.getbasetemp().parent / "quaero-shared-db" / scenario
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def prepare_once(self, config: pytest.Config, settings: Settings) -> None:
        """Journal mode and tables, by the first shard of the session, under a file lock."""
        folder = self.directory(config, "")
        marker = folder / "prepared"
        with FileLock(str(folder / "prepare.lock"), timeout=LOCK_TIMEOUT):
            if marker.exists():
                return
            prepare_database(self.path, settings)
            marker.write_text(self.worker, encoding="utf-8")

    def barrier(self, folder: Path) -> tuple[float, bool]:
        """Say this shard is ready; wait until every shard is (or the timeout).

        Returns the seconds waited and whether every shard arrived.
        """
        (folder / f"{self.worker}.ready").write_text(str(time.time()), encoding="utf-8")
        started = time.monotonic()
        while time.monotonic() - started < BARRIER_TIMEOUT:
            if all((folder / f"{w}.ready").exists() for w in self.worker_ids):
                return time.monotonic() - started, True
            time.sleep(0.02)
        return time.monotonic() - started, False
