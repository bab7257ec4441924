"""The hooks a ``conftest.py`` or plugin implements to test its own queue with pytest-quaero.

Registered through ``pytest_addhooks``. Every hook has a default of the plugin's
own (in :mod:`pytest_quaero.defaults`, all ``trylast``), so implementing one hook
swaps that one piece and leaves the rest of the pipeline alone.

Where the hooks run
    ``make_queue``, ``make_store`` and ``handle_job`` run inside the worker pool:
    in a thread of the pytest process (``--quaero-worker-mode=thread``), or in a
    spawned child process (``process``). A spawned child has no pytest session,
    so pytest-quaero hands it the list of modules whose hook implementations
    apply (by import name, or by file path for a ``conftest.py``), and the child
    imports them and registers them, in the same order, in a fresh pluggy
    manager of its own. Therefore, for process mode, put these three hooks at
    module level of a ``conftest.py`` or an importable module: a plugin *object*
    registered at run time only reaches the child if it can be pickled.

Folder scope
    Scenario items (``quaero[medium]::...``) sit at the rootdir, so they see the
    rootdir's ``conftest.py``; the ``quaero_run`` fixture calls the hooks through
    the requesting test's ``item.ihook``, so a ``tests/myqueue/conftest.py``
    applies to the tests below ``tests/myqueue`` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # annotations only: the hookspecs are added at every start-up
    import sqlite3
    from collections.abc import Callable

    from pytest_quaero.core.criteria import Criterion, Verdict
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.core.pool import Job, JobContext
    from pytest_quaero.core.protocols import QueueProtocol, StoreProtocol
    from pytest_quaero.core.scenarios import Scenario
    from pytest_quaero.core.settings import Settings


@pytest.hookspec(firstresult=True)
def pytest_quaero_make_queue(
    settings: Settings, db_path: str, connection: Callable[[], sqlite3.Connection]
) -> QueueProtocol | None:
    """Make the queue one worker or producer uses (called once per worker, per producer
    and once for the run's monitor, each in the thread or process that uses it).

    Return an object satisfying :class:`pytest_quaero.QueueProtocol`
    (``send``, ``receive``, ``delete``, ``counts``; ``close`` optional). It is
    checked when made, and a missing or mis-shaped method is an error naming it.
    ``db_path`` is the run's SQLite file: put the queue's table in it for
    contention with the job store, or use a file of its own next to it.
    ``connection()`` returns the connection this worker's queue and store share
    (opened on first call with the run's pragmas, closed with them): use it to put
    your queue and store on one connection. The default is the built-in goqite
    queue on it, so a child row and its message commit together. Accepting the
    argument is optional, as with every pluggy hook.
    """


@pytest.hookspec
def pytest_quaero_prepare_database(settings: Settings, db_path: str) -> None:
    """Set up one database file once, before anything uses it: create tables, run migrations.

    Called once per database file of a run, in the pytest process, after the plugin
    prepared the file (journal mode, the goqite and ``crawl_jobs`` tables) and before the
    worker pool starts: no worker, producer or monitor is running yet, so no lock and no
    "create if not exists" race is needed. Its time is the run's ``extra["setup_seconds"]``,
    never part of a worker's start or the execution time.

    Every hook call of a run sees the same ``db_path``: this one first, then the queue and
    store are made once on that file in this process (the contract check), then in the
    workers, producers and monitor. The extra runs of ``--quaero-compare-fixes`` are runs
    of their own, each on its own file, each prepared through this hook first. A library
    configured once per process (Django settings, a Celery app) can be pointed at
    ``db_path`` here; a spawned worker process (``--quaero-worker-mode=process``) runs no
    setup and configures it in ``make_queue``/``make_store`` from the same ``db_path``.
    Every implementation runs (there is no first result); an exception fails the run.
    """


@pytest.hookspec(firstresult=True)
def pytest_quaero_make_store(
    settings: Settings, db_path: str, connection: Callable[[], sqlite3.Connection]
) -> StoreProtocol | None:
    """Make the crawl-job store one worker or producer uses (see ``make_queue``).

    Return an object satisfying :class:`pytest_quaero.StoreProtocol`.
    It must keep the ``crawl_jobs`` table in ``db_path``: the integrity SQL run
    after the drain reads that table.
    """


@pytest.hookspec(firstresult=True)
def pytest_quaero_handle_job(job: Job, context: JobContext) -> object | None:
    """Do the work of one received job; return ``True`` when handled.

    Like ``pytest_pyfunc_call``: the first implementation returning anything but
    ``None`` ends the call, and the default (the seeded simulated work of
    ``--quaero-job-time``) runs only when every other one returned ``None``.
    Raise to fail the attempt: the message is left for redelivery until
    ``max_receive``. Runs in the worker's thread or spawned process.
    """


@pytest.hookspec
def pytest_quaero_scenarios() -> list[Scenario] | None:
    """Add named scenarios: return a list of :class:`pytest_quaero.Scenario`.

    Called once in ``pytest_configure``, so implement it in a plugin or an
    initial ``conftest.py`` (the rootdir's, or one in a directory named on the
    command line): ``--quaero-scenario`` is validated against the names known
    then. Names are lower case and must not repeat a built-in or another's.
    """


@pytest.hookspec
def pytest_quaero_criteria(scenario: Scenario, result: RunResult | None) -> list[Criterion | Verdict] | None:
    """Add criteria to ``scenario``: return :class:`pytest_quaero.Criterion` objects.

    Called with ``result=None`` when a scenario is collected: each Criterion
    returned becomes an item ``quaero[<scenario>]::<key>`` next to the built-in
    ones, judged by ``criterion.judge(result, thresholds)`` once the run is done.
    Called again with the finished ``result`` for each run (also runs made with
    the ``quaero_run`` fixture): Criterion objects are judged then, and a
    :class:`~pytest_quaero.Verdict` returned is added to the run's
    verdicts as it is (it counts for ``result.passed`` and the reports but, not
    being known at collection, has no item of its own).
    """


@pytest.hookspec
def pytest_quaero_result(result: RunResult) -> None:
    """Observe every judged run (for example to push its metrics somewhere).

    Called in the process that ran it, after the verdicts are attached. Under
    ``--quaero-shared-db`` that is each worker's own share of the load (its
    ``db_path`` is the shared file); the merged result the criterion items judge
    is not a run and is not passed here.
    Must not change ``result``.
    """


#: the hooks a worker process needs; the others run only in the pytest process
WORKER_HOOKS = ("pytest_quaero_make_queue", "pytest_quaero_make_store", "pytest_quaero_handle_job")

__all__ = [
    "WORKER_HOOKS",
    "pytest_quaero_criteria",
    "pytest_quaero_handle_job",
    "pytest_quaero_make_queue",
    "pytest_quaero_make_store",
    "pytest_quaero_prepare_database",
    "pytest_quaero_result",
    "pytest_quaero_scenarios",
]

