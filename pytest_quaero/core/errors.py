"""The one error a run raises when it cannot be carried out at all (not a failed criterion).

Its own module so the pools (built-in and external) and the run can raise it without
importing each other; :mod:`pytest_quaero.core.run` re-exports it where callers have
always found it.
"""

from __future__ import annotations

__all__ = ["RunError"]


class RunError(RuntimeError):
    """The run could not be carried out at all (not a failed criterion); the message is one paragraph."""
