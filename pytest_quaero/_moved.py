"""Old import paths that the README and examples of 0.1 documented, kept for one release.

``from pytest_quaero.queue import Message`` still works and warns once per name with a
:class:`DeprecationWarning` that names the new place: the public API in ``pytest_quaero``
where the name is public, the internal ``pytest_quaero.core`` module otherwise.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__all__ = ["moved_attribute"]


def moved_attribute(old_module: str, new_module: str, name: str) -> Any:
    """``getattr(new_module, name)``, with a DeprecationWarning saying where to import it from now."""
    if name.startswith("__"):
        raise AttributeError(name)
    value = getattr(importlib.import_module(new_module), name)
    public = importlib.import_module("pytest_quaero")
    where = "pytest_quaero" if name in public.__all__ else new_module
    warnings.warn(
        f"{old_module}.{name} moved: import it from {where} (the old path goes away in the next release)",
        DeprecationWarning,
        stacklevel=3,
    )
    return value
