"""pytest-xdist: a scenario's items on one worker, a database per worker, and ``--quaero-shared-db``.

Imported only when pytest-xdist is installed, enabled and distributing; the plugin then
calls :func:`configure` (from :mod:`~pytest_quaero.xdist.wiring`) in the controller and in
every worker. None of these modules imports xdist itself: it calls in through its hooks.

Scheduling (:mod:`~pytest_quaero.xdist.scheduling`)
    One scope per ``quaero[...]`` node, so a scenario's criterion items all go to the
    worker that runs the scenario (once). Every other test keeps the grouping of the
    ``--dist`` mode asked for (``load``: each test alone; ``loadscope``, ``loadfile``,
    ``loadgroup`` as xdist does them). ``--dist each``/``no`` are left to xdist.

A database per worker (:mod:`~pytest_quaero.xdist.wiring`)
    Runs use a temporary file under the worker's own basetemp; an explicit
    ``--quaero-db=PATH`` becomes ``PATH-gw0.db``, ``PATH-gw1.db`` ...

``--quaero-shared-db=PATH``: contention on ONE file (:mod:`~.shared_db`, :mod:`~.nodes`)
    Each scenario becomes one *shard* node per worker, ``quaero[medium@gw0]``,
    ``quaero[medium@gw1]`` ..., pinned to that worker and scheduled first, plus the
    judge node ``quaero[medium]`` with the criterion items, scheduled after every shard
    and waiting (in its setup) for their results. It is not held back until the shards
    finish: an xdist worker only runs an item once it knows the next one, so holding work
    back would stall the last shard. The file is prepared (WAL, tables) once per session
    under a file lock; the shards wait for one another at a start barrier, then run their
    pools against the file at once.

Judging (:mod:`~pytest_quaero.xdist.merge`)
    Every shard seeds the whole scenario under its own ``run_id`` (all job ids carry it)
    and its own queue name ``<queue_name>_<worker>_<session>`` (underscores: queue
    libraries put the name into table names), so one shard's integrity SQL, drain watch
    and deletion count read only its own rows while all of them contend for the same file
    lock (SQLite locks the whole file, so a queue name per worker takes nothing away from
    the contention). A shared queue name would let gw0's workers finish gw1's jobs, and no
    single run could then tell a lost job from one done elsewhere. Each shard writes its
    RunResult to the session's shared temp directory; the judge merges them (counts added,
    execution time from the first start to the last end, busy errors and retries added)
    and judges the merge, plus one criterion of its own: ``shared_db_overlap``, the time
    all pools really ran together (zero means the contention never happened).
"""

from pytest_quaero.xdist.wiring import configure

__all__ = ["configure"]
