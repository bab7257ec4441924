"""PostgreSQL errors by SQLSTATE: which are lock errors (retried and counted), and their names.

The SQLite backend tells SQLITE_BUSY from a bug by result code; here the server's
five-character SQLSTATE says it. Read from the exception's ``sqlstate`` attribute
(psycopg 3, and anything wrapping it), so this module imports no driver and
:mod:`pytest_quaero.core.retry` can ask it about every exception cheaply.

Lock errors, each the shape a lock regression takes on PostgreSQL:

* ``40001`` serialization_failure: a SERIALIZABLE (or REPEATABLE READ) transaction lost a
  race, as goqite's receive does under concurrency (goqite PR #72);
* ``40P01`` deadlock_detected: two transactions took the same rows in opposite orders;
* ``55P03`` lock_not_available: ``NOWAIT``, or a wait past ``lock_timeout``;
* ``57014`` query_canceled: a statement past ``statement_timeout`` (usually waiting on a lock);
* ``53300`` too_many_connections: the server (or the role) has no connection left.
"""

from __future__ import annotations

__all__ = ["LOCK_SQLSTATES", "NAMES", "is_postgresql_error", "lock_error_name", "sqlstate"]

#: SQLSTATE -> the condition name PostgreSQL's errcodes table gives it
NAMES = {
    "40001": "serialization_failure",
    "40P01": "deadlock_detected",
    "55P03": "lock_not_available",
    "57014": "query_canceled",
    "53300": "too_many_connections",
    "53400": "configuration_limit_exceeded",
    "40003": "statement_completion_unknown",
    "25P02": "in_failed_sql_transaction",
    "23505": "unique_violation",
    "42P01": "undefined_table",
    "42501": "insufficient_privilege",
    "28P01": "invalid_password",
    "3D000": "invalid_catalog_name",
    "08006": "connection_failure",
}
#: the SQLSTATEs counted (and retried) as lock errors, like SQLITE_BUSY and SQLITE_LOCKED
LOCK_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "53300"})
#: a refused connection carries no SQLSTATE in psycopg (libpq hands over only the server's text):
#: read from the message instead
_CONNECT_MESSAGES = (
    ("too many clients already", "53300"),
    ("too many connections for role", "53300"),
    ("too many connections for database", "53300"),
    ("remaining connection slots are reserved", "53300"),
    ("password authentication failed", "28P01"),
    ("does not exist", "3D000"),
)


def is_postgresql_error(exc: BaseException) -> bool:
    """A driver error from a PostgreSQL server (psycopg's ``Error`` family), without importing psycopg."""
    module = type(exc).__module__
    return module == "psycopg" or module.startswith("psycopg.")


def sqlstate(exc: BaseException) -> str | None:
    """The five-character SQLSTATE of a psycopg error, else None."""
    if not is_postgresql_error(exc):
        return None
    code = getattr(exc, "sqlstate", None)
    if isinstance(code, str) and len(code) == 5:
        return code
    message = str(exc)
    if "connection failed" in message or "FATAL" in message:
        for words, state in _CONNECT_MESSAGES:
            if words in message:
                return state
    return None


def lock_error_name(exc: BaseException) -> str | None:
    """``'40001 serialization_failure'`` for a lock error, None for anything else (a bug: it escapes)."""
    code = sqlstate(exc)
    if code is None or code not in LOCK_SQLSTATES:
        return None
    return f"{code} {NAMES[code]}"
