"""The explored pool: the built-in thread pool, its stop and cancel signals on the schedule's clock.

A worker waits on the pool's stop signal between polls and on its cancel signal during
the simulated work. Under exploration those waits sleep on the schedule's clock
(:meth:`~pytest_quaero.core.explore.scheduler.Scheduler.sleep`), and the stop signal
reads as not set on an explored worker until the schedule is over: the run's monitor
may see the queue drained a moment before the schedule ends, and the workers must not
see that moment, or the trace would depend on it. A cancel (Ctrl-C, the run's deadline)
ends the exploration at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pytest_quaero.core.errors import RunError
from pytest_quaero.core.explore.scheduler import Scheduler
from pytest_quaero.core.pool import WorkerPool

__all__ = ["ExploredEvent", "ExploredPool", "explored_pool"]

PROCESS_MODE_ERROR = (
    "--quaero-explore and --quaero-replay need thread workers (--quaero-worker-mode=thread, no "
    "--quaero-worker-command): the scheduler passes one token between threads of this process at every "
    "statement; worker processes would have to ask it over a pipe at each statement, which is not built"
)


class ExploredEvent(threading.Event):
    """A ``threading.Event`` whose waits on an explored thread are the schedule's sleeps."""

    def __init__(self, scheduler: Scheduler, *, cancels: bool = False) -> None:
        super().__init__()
        self._scheduler, self._cancels = scheduler, cancels

    def is_set(self) -> bool:
        return super().is_set() and not self._scheduler.exploring_here()

    def set(self) -> None:
        super().set()
        if self._cancels:
            self._scheduler.abort("the run was cancelled")

    def wait(self, timeout: float | None = None) -> bool:
        if self._scheduler.sleep(timeout):
            return self.is_set()
        return super().wait(timeout)


class ExploredPool(WorkerPool):
    """:class:`~pytest_quaero.core.pool.WorkerPool` in thread mode with explored signals."""

    def __init__(self, *args: Any, scheduler: Scheduler, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scheduler = scheduler

    def start(self) -> float:
        if self.mode == "process":
            raise RunError(PROCESS_MODE_ERROR + ".")
        if self.started_at is not None:
            raise RuntimeError("the pool is already running")
        stop = ExploredEvent(self.scheduler)
        cancel = ExploredEvent(self.scheduler, cancels=True)
        self._stop, self._cancel = stop, cancel
        self.started_at = time.monotonic()
        for index in range(self.settings.workers):
            thread = threading.Thread(target=self._thread_entry, args=(self._spec(index), stop, cancel),
                                      name=f"quaero-worker-{index + 1}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.started_at


def explored_pool(scheduler: Scheduler) -> Any:
    """A ``pool_factory`` for :func:`~pytest_quaero.core.run.run_scenario` bound to ``scheduler``."""

    def factory(*args: Any, **kwargs: Any) -> ExploredPool:
        return ExploredPool(*args, scheduler=scheduler, **kwargs)

    return factory
