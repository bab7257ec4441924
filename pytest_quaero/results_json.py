"""The JSON document of a session's runs: what ``--quaero-json`` writes and baselines are made of.

One document holds every scenario result of a session plus where it ran (machine,
commit, versions). It is written atomically (temporary file + ``os.replace``) so a
reader, or a concurrent xdist worker, never sees half a file.
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .metrics import RunResult

__all__ = ["DOCUMENT_SCHEMA_VERSION", "build_document", "load_document", "write_atomic"]

DOCUMENT_SCHEMA_VERSION = 1


def plugin_version() -> str:
    try:
        from importlib.metadata import version

        return version("pytest-quaero")
    except Exception:  # pragma: no cover - running from a source tree without metadata
        return "0+unknown"


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


def build_document(results: Iterable[RunResult], **extra: Any) -> dict[str, Any]:
    """The whole session as one JSON-able dict."""
    return {
        "schema_version": DOCUMENT_SCHEMA_VERSION,
        "plugin_version": plugin_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "results": [result.to_dict() for result in results],
        **extra,
    }


def write_atomic(path: str | os.PathLike[str], document: dict[str, Any]) -> Path:
    """Write ``document`` as JSON so readers see the old file or the new one, never a mix."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def load_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a document back; a clear ValueError when it is not one of ours."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(document, dict) or "results" not in document or "schema_version" not in document:
        raise ValueError(f"{path}: not a pytest-quaero results document (no schema_version/results)")
    if document["schema_version"] > DOCUMENT_SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {document['schema_version']} is newer than this plugin reads "
            f"({DOCUMENT_SCHEMA_VERSION}); upgrade pytest-quaero"
        )
    return document


def results_from(document: dict[str, Any]) -> list[RunResult]:
    return [RunResult.from_dict(data) for data in document["results"]]
