"""Paths the plugin writes to or opens: what is there, and whether this process may write there.

Every writer (``--quaero-json``, ``--quaero-report``, the baseline store) replaces its file
atomically, and a rename replaces whatever the path names: a device node or a FIFO would
be swapped for a regular file. :func:`refuse_special` stops that, and
:func:`output_problem` lets the plugin check an output path before any test runs.
Checks are tried for real (a probe file, an open for writing) rather than read from the
permission bits, which root bypasses while a read-only file system does not.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["SpecialFileError", "describe_kind", "output_problem", "refuse_special", "unwritable_reason"]


class SpecialFileError(OSError):
    """A path names something other than a regular file (a device, FIFO, socket or directory)."""


def describe_kind(mode: int) -> str:
    """``'a character device'``, ``'a FIFO (named pipe)'``...: what a path that is not a regular file is."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def refuse_special(path: str | os.PathLike[str], *, doing: str = "replace") -> None:
    """Raise :class:`SpecialFileError` when ``path`` exists and is not a regular file (symlinks followed).

    ``doing`` is what was refused, for the message: ``"replace"`` (a writer) or ``"read"``
    (a FIFO would block a reader for ever).
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there (yet): a writer creates it, a reader says it is missing
    if not stat.S_ISREG(mode):
        raise SpecialFileError(f"{os.fspath(path)} is {describe_kind(mode)}, not a regular file; "
                               f"refusing to {doing} it")


def unwritable_reason(path: str | os.PathLike[str]) -> str | None:
    """Why this process cannot create files in folder ``path`` (or change file ``path``), or None when it can.

    A folder is tried for real (a probe file created and removed): ``os.access`` believes
    root may create files anywhere, also where the file system refuses (/proc). A file is
    asked with ``os.access``, which does see a read-only mount; opening it would be no
    better, and closing that descriptor would drop the POSIX locks SQLite connections of
    this process hold on it.
    """
    try:
        if os.path.isdir(path):
            fd, probe = tempfile.mkstemp(prefix=".quaero-probe-", dir=path)
            os.close(fd)
            os.unlink(probe)
        elif not os.access(path, os.W_OK):
            raise OSError(errno.EROFS if _read_only_mount(path) else errno.EACCES, "not writable")
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return "it is on a read-only file system"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        return exc.strerror or type(exc).__name__
    return None


def _read_only_mount(path: str | os.PathLike[str]) -> bool:
    statvfs = getattr(os, "statvfs", None)  # not on Windows
    try:
        return statvfs is not None and bool(statvfs(path).f_flag & getattr(os, "ST_RDONLY", 1))
    except OSError:
        return False


def output_problem(path: str | os.PathLike[str]) -> str | None:
    """What keeps a writer from writing ``path`` (missing folders are created), or None when nothing does."""
    target = Path(path)
    try:
        refuse_special(target)
    except OSError as exc:  # SpecialFileError included
        return str(exc)
    for folder in target.parents:
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is a file, so nothing can be written below it"
            reason = unwritable_reason(folder)
            return None if reason is None else f"cannot create files in {folder}: {reason}"
    return None  # pragma: no cover - the root folder always exists
