"""The JSON document of a session's runs: what ``--quaero-json`` writes and baselines are made of.

One document holds every scenario result of a session plus where it ran (machine,
commit, versions). It is written atomically (temporary file + ``os.replace``) so a
reader, or a concurrent xdist worker, never sees half a file.

Layout (``schema_version`` 1; the README's "JSON results" section documents each key):

* ``schema_version``, ``plugin_version``, ``created`` (UTC, ISO 8601)
* ``versions``: plugin, python, sqlite, pytest
* ``machine``: node, system, release, machine, python_implementation, python_version,
  cpu_count, sqlite_version (nothing that jitters between runs on one machine)
* ``commit``: ``git describe`` of the project where available, else ``available: false`` + why
* ``session``: what the pytest session asked for and how it ended (added by the plugin)
* ``settings``: the session's effective settings and where each value came from
* ``results``: one entry per scenario run: :meth:`RunResult.to_dict` (every recorded
  measurement, its settings, timeline, verdicts and ``derived`` figures) plus
  ``metrics`` (a flat name -> number map, see :func:`metrics_of`) and ``passed``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pytest_quaero.core.counts import count_metrics, server_count_metrics
from pytest_quaero.core.files import refuse_special
from pytest_quaero.core.metrics import RunResult

__all__ = [
    "DOCUMENT_SCHEMA_VERSION",
    "build_document",
    "check_document",
    "commit_info",
    "load_document",
    "machine_info",
    "metrics_of",
    "plugin_version",
    "results_from",
    "versions",
    "write_atomic",
]

DOCUMENT_SCHEMA_VERSION = 1


def _installed_version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def plugin_version() -> str:
    """This plugin's version (``0+unknown`` when run from a source tree without metadata)."""
    return _installed_version("pytest-quaero") or "0+unknown"


def versions() -> dict[str, str]:
    """The versions a reader needs to compare two documents fairly."""
    return {
        "plugin": plugin_version(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        # read from the installed metadata: this pytest-free module never imports pytest
        "pytest": _installed_version("pytest") or "not installed",
    }


def machine_info() -> dict[str, Any]:
    """Where the run happened; nothing that jitters between runs on one machine."""
    return {
        "node": platform.node(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "sqlite_version": sqlite3.sqlite_version,
    }


def _git(args: list[str], cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False,
        # never prompt, never page: this runs unattended inside a test session
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat"},
    )
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(said[-1] if said else f"git {' '.join(args)} exited {done.returncode}")
    return done.stdout.strip()


def commit_info(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The project's commit: ``git describe --tags --always --dirty`` and friends, where git works.

    Never raises: outside a repository (or without git) the answer says so, because a
    document without commit info is still a valid measurement.
    """
    cwd = Path(path) if path is not None else Path.cwd()
    try:
        commit = _git(["rev-parse", "HEAD"], cwd)
        describe = _git(["describe", "--tags", "--always", "--dirty"], cwd)
        try:
            branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd)
        except RuntimeError:
            branch = ""
        commit_time = _git(["show", "-s", "--format=%cI", "HEAD"], cwd)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return {"available": False, "error": str(exc) or type(exc).__name__}
    return {
        "available": True,
        "id": commit,
        "describe": describe,
        "dirty": describe.endswith("-dirty"),
        "branch": branch,
        "time": commit_time,
    }


def metrics_of(result: RunResult) -> dict[str, float | int]:
    """Every number a run measured, flat: what JUnit properties, baselines and dashboards read.

    Names follow RunResult's own (``throughput``, ``p95``, ``execution_time``); times are
    seconds, rates percent, throughput jobs per second.
    """
    totals = result.retry_totals
    integrity = result.integrity
    gaps = result.stagger_gaps
    # a worker that never started has no lifetime to be busy in: left out of the average
    utilization = [w.utilization for w in result.workers if w.start_offset is not None]
    out: dict[str, float | int] = {
        "total_jobs": result.total_jobs,
        "parents": result.parents,
        "children_per_parent": result.children_per_parent,
        "parents_created": int(integrity.get("parents_found", 0)),
        "children_created": result.children_found,
        "jobs_completed": result.jobs_completed,
        "jobs_failed": result.jobs_failed,
        "completion_rate": round(result.completion_rate, 4),
        "execution_time": round(result.execution_time, 6),
        "total_duration": round(result.total_duration, 6),
        "timed_out": int(result.timed_out),
        "throughput": round(result.throughput, 4),
        "avg_processing_time": round(result.avg_processing_time, 6),
        "p95": round(result.p95, 6),
        "latency_p95": round(result.latency_p95, 6),
        "busy_errors": result.busy_errors,
        "hidden_busy_errors": result.hidden_busy_errors,
        "escaped_busy_errors": totals.exhausted,
        "fast_busy_errors": totals.fast_busy,
        "busy_wait_seconds": round(totals.busy_wait_seconds, 6),
        "db_operations": totals.operations,
        "db_attempts": totals.attempts,
        "retries": totals.attempts - totals.operations,
        "retried_operations": totals.retried_operations,
        "successful_retries": totals.successful_retries,
        "failed_retries": totals.exhausted,
        "attempts_per_operation": round(totals.attempts / totals.operations, 6) if totals.operations else 0.0,
        "messages_enqueued": result.messages_enqueued,
        "messages_deleted": result.messages_deleted,
        "messages_left": result.messages_left,
        "dead_messages": result.dead_messages,
        "deletion_rate": round(result.deletion_rate, 4),
        "hierarchy_integrity": round(result.hierarchy_integrity, 4),
        "orphans": int(integrity.get("orphans", 0)),
        "missing_children": int(integrity.get("missing_children", 0)),
        "extra_children": int(integrity.get("extra_children", 0)),
        "progress_mismatches": len(integrity.get("progress_mismatches", [])),
        "peak_queue_length": result.peak_queue_length,
        "avg_queue_length": round(result.avg_queue_length, 4),
        "duplicate_completions": result.duplicate_completions,
        "redeliveries": result.redeliveries,
        "job_errors": result.job_errors,
        "producer_errors": len(result.producer_errors),
        "worker_errors": len(result.worker_errors),
        "workers_started": sum(1 for w in result.workers if w.start_offset is not None),
        "worker_utilization": round(sum(utilization) / len(utilization), 4) if utilization else 0.0,
        "criteria_passed": sum(1 for v in result.verdicts if v.get("passed")),
        "criteria_failed": sum(1 for v in result.verdicts if not v.get("passed")),
    }
    out.update(count_metrics(result.extra.get("counts", {})))
    out.update(server_count_metrics(result.extra))
    if gaps:
        out["stagger_gap_min"] = round(min(gaps), 6)
        out["stagger_gap_max"] = round(max(gaps), 6)
    for worker in result.workers:
        out[f"worker_utilization.{worker.name}"] = round(worker.utilization, 4)
    for op, data in sorted(result.retry.items()):
        operations = int(data.get("operations", 0))
        out[f"attempts_per_operation.{op}"] = round(int(data.get("attempts", 0)) / operations, 6) if operations else 0.0
        out[f"busy_errors.{op}"] = int(data.get("busy_events", 0))
    for op, hidden in sorted(result.extra.get("hidden_busy", {}).get("operations", {}).items()):
        # swallowed by the code under test: counted where SQLite raised them, on top of the retried ones
        key = f"busy_errors.{op}"
        out[key] = int(out.get(key, 0)) + int(hidden)
    return out


def result_entry(result: RunResult) -> dict[str, Any]:
    """One result as the document stores it: everything recorded, plus flat metrics and the outcome."""
    data = result.to_dict()
    data["metrics"] = metrics_of(result)
    data["passed"] = result.passed
    return data


def build_document(results: Iterable[RunResult], **extra: Any) -> dict[str, Any]:
    """The whole session as one JSON-able dict.

    ``extra`` adds (or replaces) top-level keys: the plugin passes ``session``,
    ``settings`` and ``commit`` (found from the rootdir); without ``commit`` the
    current directory's git state is used.
    """
    document: dict[str, Any] = {
        "schema_version": DOCUMENT_SCHEMA_VERSION,
        "plugin_version": plugin_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "machine": machine_info(),
    }
    if "commit" not in extra:
        document["commit"] = commit_info()
    document.update(extra)
    # results last: the small header keys stay at the top of the file for a person reading it
    document["results"] = [result_entry(result) for result in results]
    return document


def _readable(path: str) -> None:
    """mkstemp creates 0600 files; give the result the mode a plain open() would (umask applied)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """Write ``text`` so readers see the old file or the new one, never a mix.

    ``durable`` fsyncs before the rename, for files that must survive a crash (results,
    baselines); scratch files shared between xdist workers skip it. A path that names
    anything but a regular file (a device, a FIFO) raises :class:`~.files.SpecialFileError`
    (an OSError) and is left as it was.
    """
    target = Path(path)
    # a rename replaces whatever the path names: a device node or a FIFO would become a plain file
    refuse_special(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        _readable(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def write_atomic(path: str | os.PathLike[str], document: dict[str, Any]) -> Path:
    """Write ``document`` as JSON so readers see the old file or the new one, never a mix."""
    return write_text_atomic(path, json.dumps(document, indent=2, sort_keys=False) + "\n")


def load_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a document back; a clear ValueError naming the file when it is not one of ours."""
    try:
        refuse_special(path, doing="read")
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not JSON text ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return check_document(document, path)


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def check_document(document: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """``document`` when it has this module's layout, else a ValueError naming ``path`` and the key at fault."""
    if not isinstance(document, dict) or "results" not in document or "schema_version" not in document:
        raise ValueError(f"{path}: not a pytest-quaero results document (no schema_version/results)")
    version_ = document["schema_version"]
    if isinstance(version_, bool) or not isinstance(version_, int) or version_ < 1:
        raise ValueError(f"{path}: schema_version is {version_!r} ({_kind(version_)}); expected a whole number "
                         f"such as {DOCUMENT_SCHEMA_VERSION}, as --quaero-json writes it")
    if version_ > DOCUMENT_SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {version_} is newer than this plugin reads "
            f"({DOCUMENT_SCHEMA_VERSION}); upgrade pytest-quaero"
        )
    results = document["results"]
    if not isinstance(results, list):
        raise ValueError(f"{path}: results is {_kind(results)}; expected a list of results, as --quaero-json "
                         "writes it")
    for index, entry in enumerate(results):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: results[{index}] is {entry!r} ({_kind(entry)}); every result must be an "
                             "object, as --quaero-json writes it")
    return document


def results_from(document: dict[str, Any]) -> list[RunResult]:
    """The results of a document, as :class:`~pytest_quaero.core.metrics.RunResult` objects."""
    return [RunResult.from_dict(data) for data in document["results"]]
