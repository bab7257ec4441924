"""Deprecated import path (0.1): use ``pytest_quaero`` (public API) or ``pytest_quaero.core.protocols``."""

from __future__ import annotations

from typing import Any

from pytest_quaero._moved import moved_attribute


def __getattr__(name: str) -> Any:
    return moved_attribute(__name__, "pytest_quaero.core.protocols", name)
