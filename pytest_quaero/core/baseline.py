"""Baselines: store a run's result, find it again for a later run on the same machine.

A baseline store is one results document (:mod:`pytest_quaero.core.results_json`, the same
format ``--quaero-json`` writes) holding the results of many scenarios and machines.
Each stored result is found by two keys:

* the **scenario key** ``light-5x20``: name and shape, so a custom scenario that reuses a
  name with another shape is never compared with the old one;
* the **machine fingerprint** ``Linux-x86_64-CPython-3.11-sqlite3.40.1-2cpu``: only what
  does not jitter between runs on one machine (no CPU clock, no host name, which CI
  runners change every run). ``QUAERO_BASELINE_MACHINE`` replaces it with a name of
  your own, e.g. one shared by a fleet of identical runners.

Saving reads, merges and rewrites the store under a lock file (:mod:`filelock`) and
replaces it atomically, so xdist workers that save at the same moment each add their
scenario and none is lost.

Comparing a run with the baseline found is :mod:`pytest_quaero.core.comparison`; its
names are importable from here too.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_quaero.core.comparison import (
    METRICS,
    BaselineError,
    CompareRule,
    Comparison,
    Metric,
    MetricRow,
    compare,
    format_table,
    parse_rules,
    scenario_key,
)
from pytest_quaero.core.files import SpecialFileError, output_problem, refuse_special
from pytest_quaero.core.metrics import RunResult
from pytest_quaero.core.results_json import build_document, load_document, machine_info, write_atomic
from pytest_quaero.core.settings import DEFAULT_BASELINE_STORE

__all__ = [
    "DEFAULT_STORE",
    "METRICS",
    "BaselineError",
    "BaselineStore",
    "CompareRule",
    "Comparison",
    "Metric",
    "MetricRow",
    "StoredBaseline",
    "compare",
    "document_fingerprint",
    "fingerprint",
    "format_table",
    "load_results",
    "parse_rules",
    "scenario_key",
]

#: where ``--quaero-save-baseline`` with no value keeps baselines, relative to the rootdir
DEFAULT_STORE = DEFAULT_BASELINE_STORE


# ---------------------------------------------------------------- keys


def fingerprint(machine: Mapping[str, Any] | None = None) -> str:
    """A machine's baseline key from :func:`results_json.machine_info`, without anything that jitters."""
    override = os.environ.get("QUAERO_BASELINE_MACHINE", "").strip()
    if override and machine is None:
        return override
    if machine is None:
        machine = machine_info()
    python = ".".join(str(machine.get("python_version", "?")).split(".")[:2])
    return (
        f"{machine.get('system', '?')}-{machine.get('machine', '?')}-{machine.get('python_implementation', '?')}-"
        f"{python}-sqlite{machine.get('sqlite_version', '?')}-{machine.get('cpu_count', '?')}cpu"
    )

# ---------------------------------------------------------------- the lock


@contextlib.contextmanager
def _locked(path: Path, timeout: float = 60.0) -> Iterator[None]:
    """Hold ``path`` + ``.lock`` exclusively, across processes (xdist workers, CI jobs).

    :mod:`filelock` (flock on POSIX, msvcrt on Windows): the OS drops the lock of a process
    that dies holding it, so no stale lock file blocks the next run.
    """
    from filelock import FileLock, Timeout  # deferred: only saving a baseline takes the lock

    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock_path), timeout=timeout):
            yield
    except Timeout:
        raise BaselineError(f"{path}: another process has held {lock_path} for {timeout:g}s") from None


# ---------------------------------------------------------------- the store


@dataclass(frozen=True)
class StoredBaseline:
    """A result found in a store, and where it came from."""

    result: RunResult
    key: str
    fingerprint: str
    saved: str


class BaselineStore:
    """One JSON results document holding baselines of many scenarios and machines."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        target = Path(path)
        if target.is_dir() or str(path).endswith(("/", os.sep)):
            target = target / "baseline.json"
        self.path = target

    def _entries(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        if not self.path.exists():
            return None, []
        try:
            document = load_document(self.path)
        except ValueError as exc:
            raise BaselineError(f"baseline {exc}") from None
        results = document.get("results")
        if not isinstance(results, list):
            raise BaselineError(f"baseline {self.path}: 'results' is not a list")
        return document, results

    @staticmethod
    def _identity(entry: Mapping[str, Any], document: Mapping[str, Any]) -> tuple[str, str, str]:
        info = (entry.get("extra") or {}).get("baseline") or {}
        key = info.get("key") or scenario_key(entry)
        machine = info.get("fingerprint") or fingerprint(document.get("machine") or {})
        return key, machine, str(info.get("saved") or document.get("created") or "")

    def find(self, key: str, machine: str) -> StoredBaseline | None:
        """The baseline of scenario ``key`` on machine ``machine``, or None."""
        document, entries = self._entries()
        if document is None:
            return None
        found: StoredBaseline | None = None
        for entry in entries:
            try:
                entry_key, entry_machine, saved = self._identity(entry, document)
            except KeyError:
                continue
            if entry_key == key and entry_machine == machine:
                found = StoredBaseline(_result_of(entry, f"baseline {self.path}: entry {key}"), entry_key,
                                       entry_machine, saved)
        return found

    def machines(self, key: str) -> list[str]:
        """Machines that do have a baseline of ``key`` (to explain a miss)."""
        document, entries = self._entries()
        if document is None:
            return []
        seen: list[str] = []
        for entry in entries:
            with contextlib.suppress(KeyError):
                entry_key, entry_machine, _ = self._identity(entry, document)
                if entry_key == key and entry_machine not in seen:
                    seen.append(entry_machine)
        return seen

    def check(self, *, writing: bool) -> None:
        """Before any run: a BaselineError unless every stored result can be read and, when
        ``writing``, this process can write the store (a regular file or none yet, in a
        folder it may create files in)."""
        try:
            refuse_special(self.path, doing="replace" if writing else "read")
        except SpecialFileError as exc:
            raise BaselineError(f"baseline {exc}") from None
        if self.path.exists():
            document, entries = self._entries()
            for index, entry in enumerate(entries):
                _result_of(entry, f"baseline {self.path}: results[{index}]")
                if document is not None:
                    try:
                        self._identity(entry, document)
                    except (KeyError, TypeError, AttributeError) as exc:
                        raise BaselineError(f"baseline {self.path}: results[{index}] has no scenario key "
                                            f"({type(exc).__name__}: {exc})") from None
        problem = output_problem(self.path) if writing else None
        if problem is not None:
            raise BaselineError(f"baseline {self.path}: cannot be saved: {problem}")

    def save(self, result: RunResult, machine: str) -> str:
        """Store ``result`` as the baseline of its scenario on ``machine``; returns the key.

        Other scenarios and machines already in the store are kept as they are; an
        unreadable store is never overwritten (that would lose every baseline in it).
        """
        refuse_special(self.path)  # before reading it: a FIFO would block the read for ever
        key = scenario_key(result)
        # The entry exactly as --quaero-json writes it (machine, commit, versions on the document).
        new_document = build_document([result])
        entry = new_document["results"][0]
        entry["extra"] = dict(entry.get("extra") or {})
        entry["extra"]["baseline"] = {
            "key": key, "fingerprint": machine, "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with _locked(self.path):
            document, entries = self._entries()
            kept: list[dict[str, Any]] = []
            for old in entries:
                try:
                    same = self._identity(old, document or {})[:2] == (key, machine)
                except KeyError:
                    same = False
                if not same:
                    kept.append(old)
            kept.append(entry)
            new_document["results"] = kept
            new_document["baseline_store"] = True
            write_atomic(self.path, new_document)
        return key


def load_results(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[RunResult]]:
    """A results document and its results, with errors that name the file and the entry at fault."""
    try:
        document = load_document(path)
    except ValueError as exc:
        raise BaselineError(str(exc)) from None
    return document, [_result_of(entry, f"{path}: results[{index}]") for index, entry in enumerate(document["results"])]


def _result_of(entry: Mapping[str, Any], where: str) -> RunResult:
    """``entry`` as a RunResult whose key and gated figures can be computed, or a BaselineError."""
    try:
        result = RunResult.from_dict(dict(entry))
        scenario_key(result)
        for metric in METRICS.values():
            value = metric.value(result)
            if value is not None:  # None: counts a result from before they were kept does not have
                float(value)
    except (TypeError, KeyError, ValueError, AttributeError, ArithmeticError) as exc:
        raise BaselineError(f"{where} cannot be read as a scenario result ({type(exc).__name__}: {exc})") from None
    return result


def document_fingerprint(document: Mapping[str, Any], result: RunResult) -> str:
    """The machine ``result`` was saved for: its own baseline record, else its document's machine."""
    info = result.extra.get("baseline") if isinstance(result.extra, dict) else None
    if isinstance(info, dict) and info.get("fingerprint"):
        return str(info["fingerprint"])
    return fingerprint(document.get("machine") or {})

