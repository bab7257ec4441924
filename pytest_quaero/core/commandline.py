"""The ``--quaero-worker-command`` value check, apart from the settings table so that table stays short.

Standard library only, like :mod:`pytest_quaero.core.fields`, which reads it at every start-up.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["parse_command"]


def parse_command(value: Any) -> str:
    """A worker command line: its program found on PATH, an executable file, or a Go module directory."""
    import shlex  # deferred: only a worker command is split, and this module is read at every start-up
    import shutil

    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(value)
    text = os.fsdecode(value).strip()
    if not text or "\0" in text or not text.isprintable():
        raise ValueError(value)
    try:
        argv = shlex.split(text)
    except ValueError:  # an unclosed quote
        raise ValueError(value) from None
    if not argv:
        raise ValueError(value)
    program = os.path.expanduser(argv[0])
    if os.path.isdir(program):
        if not os.path.isfile(os.path.join(program, "go.mod")):
            raise ValueError(value)
    elif shutil.which(program) is None:  # not found, or found but not executable
        raise ValueError(value)
    return text
