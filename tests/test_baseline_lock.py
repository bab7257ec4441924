"""The baseline store's lock is :mod:`filelock`'s: held by another process, a save waits, then says
so; when that process dies holding it, the OS drops it (no stale lock file blocks the next save)."""

from __future__ import annotations

import multiprocessing
import sys
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from pytest_quaero.core.baseline import BaselineError, _locked


def _hold(lock_path: str, held: Event) -> None:
    from filelock import FileLock

    with FileLock(lock_path):
        held.set()
        time.sleep(120)  # until killed


def test_a_held_lock_times_out_naming_the_file_and_a_dead_holder_leaves_none(tmp_path: Path) -> None:
    store = tmp_path / "baseline.json"
    # fork where there is one: a spawned child would import the plugin again, for seconds on a busy machine
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    held = context.Event()
    holder = context.Process(target=_hold, args=(str(tmp_path / "baseline.json.lock"), held))
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(BaselineError, match=r"another process has held .*baseline\.json\.lock for 0\.2s"), \
                _locked(store, timeout=0.2):
            pass
    finally:
        holder.kill()  # dies holding the lock, as a killed xdist worker would
        holder.join(60)
    with _locked(store, timeout=5):
        pass
