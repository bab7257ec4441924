"""A worker command's program: as given, or a Go module directory built once and cached.

``--quaero-worker-command=examples/go_goqite`` names a directory with a ``go.mod``: it is
built with ``go build`` (pure Go, ``CGO_ENABLED=0``) into a cache keyed by its sources and
the Go version, so a session (and the next one, and every pytest-xdist worker) builds it
once, before any run's clock starts. The cache is ``$QUAERO_BUILD_CACHE``, else the user's
cache directory (``$XDG_CACHE_HOME`` or ``~/.cache``) under ``pytest-quaero/workers``.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from pytest_quaero.core.errors import RunError

__all__ = ["build_cache_dir", "resolve_command"]

#: a Go build that takes longer than this is stuck (the first one downloads modules: ~1 minute here)
_BUILD_TIMEOUT = 600.0
_SOURCE_SUFFIXES = (".go", ".mod", ".sum", ".s", ".c", ".h", ".sql")


def build_cache_dir() -> Path:
    explicit = os.environ.get("QUAERO_BUILD_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-quaero" / "workers"


def resolve_command(command: str) -> list[str]:
    """The argv to start: ``command`` split as a shell would, its program built first if it is a Go module."""
    argv = shlex.split(command)
    program = os.path.expanduser(argv[0])
    if os.path.isdir(program):
        argv[0] = str(_build(Path(program).resolve()))
    return argv


def _sources_digest(module: Path, go: str) -> str:
    digest = hashlib.sha256()
    version = subprocess.run([go, "version"], capture_output=True, text=True, timeout=60, check=False)
    digest.update(version.stdout.encode())
    for path in sorted(module.rglob("*")):
        if path.is_file() and path.suffix in _SOURCE_SUFFIXES and not path.name.endswith("_test.go"):
            digest.update(str(path.relative_to(module)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _build(module: Path) -> Path:
    go = shutil.which("go")
    if go is None:
        raise RunError(f"--quaero-worker-command names the Go module {module}, but no `go` command is on PATH: "
                       "install Go, or build the worker yourself and give the binary's path.")
    cache = build_cache_dir()
    binary = cache / f"{module.name}-{_sources_digest(module, go)}"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # deferred: only a build takes it; xdist workers build one at a time

    with FileLock(str(binary) + ".lock"):
        if binary.exists():
            return binary
        partial = binary.with_name(binary.name + f".{os.getpid()}.partial")
        env = {**os.environ, "CGO_ENABLED": os.environ.get("CGO_ENABLED", "0")}
        try:
            built = subprocess.run([go, "build", "-o", str(partial), "."], cwd=module, env=env,
                                   capture_output=True, text=True, timeout=_BUILD_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise RunError(f"go build in {module} did not finish within {_BUILD_TIMEOUT:.0f}s.") from None
        if built.returncode != 0:
            tail = " | ".join((built.stderr or built.stdout).strip().splitlines()[-8:])
            raise RunError(f"go build in {module} failed (exit {built.returncode}): {tail}")
        os.replace(partial, binary)  # atomic: another session never runs a half-written binary
    return binary
