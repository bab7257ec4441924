"""pytest-xdist: a scenario's items on one worker, a database per worker, and ``--quaero-shared-db``.

Imported (and its hooks registered) only when pytest-xdist is installed and enabled.

Scheduling
    :class:`QuaeroScheduling` is LoadScopeScheduling with one scope per
    ``quaero[...]`` node, so a scenario's criterion items all go to the worker
    that runs the scenario (once). Every other test keeps the grouping of the
    ``--dist`` mode asked for (``load``: each test alone; ``loadscope``,
    ``loadfile``, ``loadgroup`` as xdist does them). ``--dist each``/``no`` are
    left to xdist.

A database per worker
    Runs use a temporary file under the worker's own basetemp; an explicit
    ``--quaero-db=PATH`` becomes ``PATH-gw0.db``, ``PATH-gw1.db`` ...

``--quaero-shared-db=PATH`` (cross-process contention on ONE file)
    Each scenario becomes one *shard* node per worker, ``quaero[medium@gw0]``,
    ``quaero[medium@gw1]`` ..., pinned to that worker and scheduled first, plus
    the judge node ``quaero[medium]`` with the criterion items, scheduled after
    every shard and waiting (in its setup) for their results. It is not held
    back until the shards finish: an xdist worker only runs an item once it
    knows the next one, so holding work back would stall the last shard. The file is prepared
    (WAL, tables) once per session under a file lock; the shards wait for one
    another at a start barrier, then run their pools against the file at once.

    Judging: every shard seeds the whole scenario under its own ``run_id`` (all
    job ids carry it) and its own queue name ``<queue_name>_<worker>_<session>``
    (underscores: queue libraries put the name into table names), so one shard's integrity SQL, drain watch and deletion count read only its
    own rows while all of them contend for the same file lock (SQLite locks the
    whole file, so a queue name per worker takes nothing away from the
    contention). A shared queue name would let gw0's workers finish gw1's jobs,
    and no single run could then tell a lost job from one done elsewhere. Each
    shard writes its RunResult to the session's shared temp directory; the
    judge merges them (counts added, execution time from the first start to the
    last end, busy errors and retries added) and judges the merge, plus one
    criterion of its own: ``shared_db_overlap``, the time all pools really ran
    together (zero means the contention never happened).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from xdist.scheduler.loadscope import LoadScopeScheduling

if TYPE_CHECKING:
    from pytest_quaero.core.criteria import Verdict
    from pytest_quaero.core.harness import Harness
    from pytest_quaero.core.metrics import RunResult
    from pytest_quaero.plugin import QuaeroState
    from pytest_quaero.core.scenarios import Scenario

__all__ = ["QuaeroScheduling", "SharedDb", "XdistHooks", "configure", "merge_results"]

#: the criterion of --quaero-shared-db: how long every pool really ran at once
OVERLAP_KEY = "shared_db_overlap"
#: how long a shard waits at the start barrier for the other workers' shards
BARRIER_TIMEOUT = 60.0
_SHARD_SCOPE = re.compile(r"^quaero\[(?P<scenario>[^\]@]+)@(?P<worker>[^\]]+)\]$")


def _worker_input(config: pytest.Config) -> dict[str, Any] | None:
    return getattr(config, "workerinput", None)


def _suffixed(path: str, worker: str) -> str:
    root, ext = os.path.splitext(path)
    return f"{root}-{worker}{ext or '.db'}"


def configure(config: pytest.Config, current: QuaeroState, nodes_key: Any) -> None:
    """Wire xdist into the session: controller gets the scheduler, workers their databases."""
    shared = config.getoption("quaero_shared_db")
    workerinput = _worker_input(config)
    if workerinput is None:
        if shared:
            _check_shared_option(config, shared, current)
        config.pluginmanager.register(XdistHooks(current), "quaero-xdist")
        return
    worker = str(workerinput.get("workerid", "gw0"))
    if shared:
        shared_db = SharedDb(
            path=str(workerinput.get("quaero_shared_db") or os.path.abspath(shared)),
            worker=worker,
            workers=int(workerinput.get("workercount", 1)),
            session=str(workerinput.get("testrunuid", "session"))[:8],
        )
        config.stash[nodes_key] = shared_db.make_nodes
    elif current.settings.db_path:
        # Two workers on one --quaero-db file would fight over one queue: a file each.
        current.settings = current.settings.replace(
            source=f"--quaero-db, per pytest-xdist worker {worker}",
            db_path=_suffixed(current.settings.db_path, worker),
        )


def _check_shared_option(config: pytest.Config, shared: str, current: QuaeroState) -> None:
    where = f"--quaero-shared-db={shared}"
    if not config.getoption("numprocesses"):
        raise pytest.UsageError(f"{where}: needs pytest-xdist workers; add -n N (N >= 1).")
    if config.getoption("dist") == "each":
        raise pytest.UsageError(f"{where}: cannot be used with --dist each; use the default --dist load.")
    if current.settings.db_path:
        source = current.settings.sources.get("db_path", "--quaero-db")
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


# ------------------------------------------------------------------ controller


class XdistHooks:
    """Controller-side hooks, registered only with xdist present."""

    def __init__(self, state: QuaeroState) -> None:
        self.state = state

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        shared = self.state.config.getoption("quaero_shared_db")
        if shared:
            # One absolute path for every worker, whatever its working directory.
            node.workerinput["quaero_shared_db"] = os.path.abspath(shared)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        dist = config.getoption("dist")
        wanted = self.state.scenarios or config.getoption("quaero_audit")
        if not wanted or dist not in ("load", "loadscope", "loadfile", "loadgroup", "worksteal"):
            return None
        return QuaeroScheduling(config, log, fallback=dist)


class QuaeroScheduling(LoadScopeScheduling):
    """LoadScope with a scope per ``quaero[...]`` node; shards pinned to their worker.

    * ``quaero[<scenario>@<worker>]`` (shared-db shards) go to that worker, before anything else;
    * any other ``quaero...`` node is one scope; other tests group as ``fallback`` does.
    """

    def __init__(self, config: pytest.Config, log: Any = None, *, fallback: str = "load") -> None:
        super().__init__(config, log)
        self.fallback = fallback

    def _split_scope(self, nodeid: str) -> str:
        if nodeid.startswith("quaero"):
            return nodeid.split("::", 1)[0]
        if self.fallback == "loadscope":
            return super()._split_scope(nodeid)
        if self.fallback == "loadfile":
            return nodeid.split("::", 1)[0]
        if self.fallback == "loadgroup" and nodeid.rfind("@") > nodeid.rfind("]"):
            return nodeid.split("@")[-1]
        return nodeid

    @staticmethod
    def _pin(scope: str) -> str | None:
        match = _SHARD_SCOPE.match(scope)
        return match.group("worker") if match else None

    def _may_take(self, node: Any, scope: str) -> bool:
        pin = self._pin(scope)
        if pin is None:
            return True
        live = {n.gateway.id for n in self.nodes}
        # a pin to a worker that died is void: someone must run the shard
        return pin == node.gateway.id or pin not in live

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:
            for node in self.nodes:
                self._reschedule(node)
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = list(next(iter(self.registered_collections.values())))
        if not self.collection:
            return
        units: dict[str, dict[str, bool]] = {}
        for nodeid in self.collection:
            units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
        # Shards first, so every worker starts its share of the shared-db load at once.
        for scope, unit in sorted(units.items(), key=lambda kv: 0 if self._pin(kv[0]) else 1):
            self.workqueue[scope] = unit
        # Twice, as LoadScope does: a worker holding a single item waits for a next one.
        for _ in range(2):
            for node in self.nodes:
                self._reschedule(node)

    def _reschedule(self, node: Any) -> None:
        if node.shutting_down:
            return
        takeable = [scope for scope in self.workqueue if self._may_take(node, scope)]
        if not takeable:
            node.shutdown()  # nothing left this worker may ever run
            return
        if self._pending_of(self.assigned_work[node]) > 2:
            return
        self._assign(node, takeable[0])

    def _assign(self, node: Any, scope: str) -> None:
        work_unit = self.workqueue.pop(scope)
        self.assigned_work.setdefault(node, {})[scope] = work_unit
        collection = self.registered_collections[node]
        node.send_runtest_some([collection.index(nodeid) for nodeid, done in work_unit.items() if not done])

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        nodeid = self.registered_collections[node][item_index]
        self.assigned_work[node][self._split_scope(nodeid)][nodeid] = True
        # Any completion may leave another worker with nothing it may take: shut it down.
        for other in self.nodes:
            self._reschedule(other)


# ------------------------------------------------------------------ workers: shared database


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float = 120.0) -> Iterator[None]:
    """An inter-process lock: filelock when installed, else flock (POSIX)."""
    try:
        from filelock import FileLock
    except ImportError:
        FileLock = None  # noqa: N806
    if FileLock is not None:
        with FileLock(str(path), timeout=timeout):
            yield
        return
    import fcntl

    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_json(path: Path, data: Any) -> None:
    from pytest_quaero.core.results_json import write_text_atomic

    write_text_atomic(path, json.dumps(data), durable=False)  # readers never see half a file


@dataclass(frozen=True)
class SharedDb:
    """This worker's part in a ``--quaero-shared-db`` session."""

    path: str
    worker: str
    workers: int
    session: str

    @property
    def worker_ids(self) -> list[str]:
        return [f"gw{k}" for k in range(self.workers)]

    def directory(self, config: pytest.Config, scenario: str) -> Path:
        """The session's exchange folder: the basetemp every worker's basetemp lives in."""
        factory = config._tmp_path_factory  # type: ignore[attr-defined]
        folder = factory.getbasetemp().parent / "quaero-shared-db" / scenario
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def make_nodes(self, session: pytest.Session, scenarios: list[Scenario], harness: Harness) -> list[pytest.Item]:
        from pytest_quaero.xdist.nodes import JudgeNode, ShardNode  # only now: they need the whole run machinery

        nodes: list[pytest.Collector] = []
        for scenario in scenarios:
            nodes.extend(ShardNode.create(session, scenario, harness, self, worker) for worker in self.worker_ids)
            nodes.append(JudgeNode.create(session, scenario, harness, self))
        from pytest_quaero.items import collect_nodes

        return collect_nodes(session, nodes)

    def prepare_once(self, config: pytest.Config, harness: Harness) -> None:
        """WAL mode and tables, by the first shard of the session, under a file lock."""
        from pytest_quaero.core import db
        from pytest_quaero.core.queue import create_schema as queue_schema
        from pytest_quaero.core.store import create_schema as store_schema

        folder = self.directory(config, "")
        marker = folder / "prepared"
        with _file_lock(folder / "prepare.lock"):
            if marker.exists():
                return
            settings = harness.settings
            db.prepare(self.path, settings)
            conn = db.connect(self.path, settings)
            try:
                queue_schema(conn)
                store_schema(conn)
            finally:
                conn.close()
            marker.write_text(self.worker, encoding="utf-8")

    def barrier(self, folder: Path) -> tuple[float, bool]:
        """Say this shard is ready; wait until every shard is (or the timeout)."""
        (folder / f"{self.worker}.ready").write_text(str(time.time()), encoding="utf-8")
        started = time.monotonic()
        while time.monotonic() - started < BARRIER_TIMEOUT:
            if all((folder / f"{w}.ready").exists() for w in self.worker_ids):
                return time.monotonic() - started, True
            time.sleep(0.02)
        return time.monotonic() - started, False


def _combined_stagger(parts: list[RunResult], merged_verdict: Verdict) -> Verdict:
    """Staggering is a property of one pool: judge each shard's, all must pass."""
    from pytest_quaero.core.criteria import Verdict

    shard_verdicts = []
    for part in parts:
        for data in part.verdicts:
            if data["criterion"] == "worker_staggering":
                shard_verdicts.append((part.extra.get("shared_db", {}).get("worker", "?"), Verdict.from_dict(data)))
    if not shard_verdicts:
        return merged_verdict
    measured = "; ".join(f"{worker}: {v.measured}" for worker, v in shard_verdicts)
    return replace(shard_verdicts[0][1], measured=measured, passed=all(v.passed for _, v in shard_verdicts),
                   value=None, detail="judged per worker pool")


def overlap_verdict(merged: RunResult) -> Verdict:
    """How long every shard's pool ran at the same time: the cross-process contention."""
    from pytest_quaero.core.criteria import Verdict

    info = merged.extra.get("shared_db", {})
    windows = info.get("windows", [])
    span = max((end for _, end in windows), default=0.0) - min((start for start, _ in windows), default=0.0)
    if len(windows) < 2:
        return Verdict(OVERLAP_KEY, "Cross-Process Overlap", "n/a (one worker)", "> 0s with all pools running", True)
    overlap = max(0.0, min(end for _, end in windows) - max(start for start, _ in windows))
    share = 100.0 * overlap / span if span > 0 else 0.0
    return Verdict(OVERLAP_KEY, "Cross-Process Overlap",
                   f"{overlap:.2f}s of {span:.2f}s ({share:.0f}%) with all {len(windows)} pools running",
                   "> 0s with all pools running", overlap > 0, overlap,
                   "" if overlap > 0 else "the workers' pools never ran at the same time: no contention was tested")


# ------------------------------------------------------------------ merging shard results


def _window(part: RunResult) -> tuple[float, float]:
    """Wall-clock time from the pool's start until the queue drained."""
    start = part.phase_offset("pool_started") or 0.0
    end = part.phase_offset("jobs_completed")
    end = part.execution_time if end is None else end
    return part.started_wall + start, part.started_wall + end


def _merge_integrity(parts: list[RunResult], workers: list[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for worker, part in zip(workers, parts):
        for key, value in part.integrity.items():
            if key == "queries":
                merged.setdefault(key, []).extend(
                    {**query, "title": f"{worker}: {query.get('title', '')}"} for query in value)
            elif isinstance(value, bool) or not isinstance(value, (int, list)):
                merged.setdefault(key, value)
            elif isinstance(value, int):
                merged[key] = merged.get(key, 0) + value
            else:
                merged.setdefault(key, []).extend(value)
    expected = merged.get("parents_expected", 0) + merged.get("children_expected", 0)
    ok = merged.get("parents_ok", 0) + merged.get("children_ok", 0)
    merged["integrity_pct"] = 100.0 * ok / expected if expected else 100.0
    return merged


def _merge_samples(parts: list[RunResult], t0: float) -> list[list[float]]:
    """The queues' lengths added up over time (each shard's last sample holds until its next)."""
    events = sorted(
        (part.started_wall + sample[0] - t0, index, sample) for index, part in enumerate(parts)
        for sample in part.queue_samples
    )
    last: dict[int, list[float]] = {}
    merged: list[list[float]] = []
    for offset, index, sample in events:
        last[index] = sample
        merged.append([round(offset, 4), *(sum(s[k] for s in last.values()) for k in (1, 2, 3))])
    return merged


def _merge_timeline(parts: list[RunResult], t0: float) -> list[dict[str, Any]]:
    """Each phase at the time the last shard reached it."""
    phases: dict[str, dict[str, Any]] = {}
    for part in parts:
        for entry in part.timeline:
            offset = part.started_wall + float(entry["offset"]) - t0
            if entry["phase"] == "initialization":
                offset = 0.0
            known = phases.get(entry["phase"])
            if known is None or offset > known["offset"]:
                phases[entry["phase"]] = {**entry, "offset": round(offset, 6)}
    return sorted(phases.values(), key=lambda entry: entry["offset"])


def merge_results(parts: list[RunResult], *, shared_path: str) -> RunResult:
    """One RunResult for the shards of one scenario on a shared database."""
    from pytest_quaero.core.metrics import RunResult, WorkerRecord
    from pytest_quaero.core.retry import merge_stats

    if not parts:
        raise ValueError("nothing to merge")
    parts = sorted(parts, key=lambda p: str(p.extra.get("shared_db", {}).get("worker", "")))
    workers = [str(p.extra.get("shared_db", {}).get("worker", f"part{i}")) for i, p in enumerate(parts)]
    first = parts[0]
    t0 = min(p.started_wall for p in parts)
    windows = [_window(p) for p in parts]
    # Start from a copy of the first shard, so fields this function does not know keep a value.
    merged = RunResult.from_dict(first.to_dict())
    merged.run_id = "+".join(p.run_id for p in parts)
    merged.parents = sum(p.parents for p in parts)
    merged.db_path = shared_path
    merged.started_wall = t0
    merged.execution_time = max(p.started_wall + p.execution_time for p in parts) - t0
    merged.total_duration = max(p.started_wall + p.total_duration for p in parts) - t0
    merged.timed_out = any(p.timed_out for p in parts)
    merged.timeline = _merge_timeline(parts, t0)
    merged.queue_samples = _merge_samples(parts, t0)
    merged.processing_times = [t for p in parts for t in p.processing_times]
    merged.latencies = [t for p in parts for t in p.latencies]
    merged.workers = []
    for worker, part in zip(workers, parts):
        shift = part.started_wall - t0
        for record in part.workers:
            merged.workers.append(WorkerRecord(
                index=len(merged.workers), name=f"{worker}/{record.name}", started_wall=record.started_wall,
                start_offset=None if record.start_offset is None else record.start_offset + shift,
                stop_offset=None if record.stop_offset is None else record.stop_offset + shift,
                busy_seconds=record.busy_seconds, jobs=record.jobs,
            ))
    merged.retry = {op: stats.as_dict() for op, stats in sorted(merge_stats([p.retry for p in parts]).items())}
    for name in ("messages_enqueued", "messages_left", "dead_messages", "jobs_completed", "jobs_failed",
                 "children_found", "duplicate_completions", "redeliveries", "job_errors"):
        setattr(merged, name, sum(getattr(p, name) for p in parts))
    merged.duplicate_jobs = [job for p in parts for job in p.duplicate_jobs][:20]
    merged.producer_errors = [f"{w}: {e}" for w, p in zip(workers, parts) for e in p.producer_errors][:50]
    merged.worker_errors = [f"{w}: {e}" for w, p in zip(workers, parts) for e in p.worker_errors][:50]
    merged.integrity = _merge_integrity(parts, workers)
    merged.settings = {**first.settings, "db_path": shared_path,
                       "workers": sum(int(p.settings.get("workers", 0)) for p in parts),
                       "queue_name": str(first.extra.get("shared_db", {}).get("base_queue", "queue")) + "_<worker>"}
    merged.verdicts = []
    merged.extra = {
        "kept": True,
        "shared_db": {
            "merged": True,
            "path": shared_path,
            "workers": len(parts),
            "windows": [[round(a, 6), round(b, 6)] for a, b in windows],
            "shards": [
                {"worker": w, "run_id": p.run_id, "queue": p.extra.get("shared_db", {}).get("queue"),
                 "jobs_completed": p.jobs_completed, "total_jobs": p.total_jobs, "busy_errors": p.busy_errors,
                 "execution_time": round(p.execution_time, 4), "throughput": round(p.throughput, 2),
                 "barrier_complete": p.extra.get("shared_db", {}).get("barrier_complete"),
                 "log_path": p.log_path, "passed": p.passed}
                for w, p in zip(workers, parts)
            ],
        },
    }
    return merged

