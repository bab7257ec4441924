"""The contract a queue or job store of your own must meet to run under pytest-quaero.

The worker pool, the producers and the run's monitor only ever call the methods
below, so any object with them can be swapped in through the
``pytest_quaero_make_queue`` / ``pytest_quaero_make_store`` hooks. The objects are
checked when they are made (:func:`check_queue`, :func:`check_store`): a missing
method, or one that cannot take the arguments the harness passes, is a
:class:`ProtocolError` naming the object and everything missing, before any job runs.

Errors: let them through
    Do not catch ``sqlite3.Error`` (``database is locked``, SQLITE_BUSY ...)
    inside these methods, and do not retry it there. The harness wraps every
    call in its own retry with exponential backoff, which counts each busy error
    (the ``sqlite_busy_errors`` criterion) and retries the *whole* call. A lock
    error swallowed inside the queue is contention the test can no longer see;
    a library that retries internally is measured as it is (its retries are
    invisible, its escaped errors are counted). Any other exception from the
    queue or store is counted as a job error or a producer error.

One object per thread
    Each worker, each producer and the monitor make their own queue and store,
    in the thread (or spawned process) that uses them, so an object may hold
    one ``sqlite3`` connection without any locking of its own. Two of them are
    alive at once, in different threads or processes, on the same file: that is
    the contention under test.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing the plugin stays free of the queue module
    from pytest_quaero.core.queue import Message, QueueCounts

__all__ = [
    "QUEUE_METHODS",
    "STORE_METHODS",
    "ProtocolError",
    "QueueProtocol",
    "StoreProtocol",
    "check_queue",
    "check_store",
]


class ProtocolError(TypeError):
    """A queue or store made by a hook does not meet the contract; says what is missing."""


@runtime_checkable
class QueueProtocol(Protocol):
    """A work queue with visibility-timeout semantics (goqite's), one instance per thread.

    ``close()`` is optional: called when the worker, producer or monitor is done,
    if the object has it.
    """

    def send(self, body: bytes) -> str:
        """Enqueue one message; return its id. Atomic: one transaction.

        ``body`` is the JSON job message; hand it back byte for byte in
        :meth:`receive`.
        """
        ...

    def receive(self) -> Message | None:
        """Claim the next visible message, or return ``None`` when there is none.

        Must be atomic across threads *and processes*: while a message is
        claimed (until its visibility timeout), no other instance may receive
        it. A select-then-update in two statements breaks this, and the
        ``no_duplicate_processing`` criterion shows it. Return a
        :class:`pytest_quaero.core.queue.Message` (``id``, ``body``, ``received``:
        how many times it has been delivered, 1 on the first delivery, which
        decides when a failing job is given up after ``max_receive``).
        """
        ...

    def delete(self, message_id: str) -> bool:
        """Acknowledge a processed message; ``False`` if it was already gone. Atomic."""
        ...

    def counts(self) -> QueueCounts:
        """This queue's messages now: ``total`` (rows still held), ``visible`` (receivable
        now), ``in_flight`` (claimed or delayed), ``dead`` (given up: never delivered again).

        The run watches it to know when the queue drained (``total - dead == 0``)
        and reads it once more for ``messages_left`` and ``dead_messages``.
        """
        ...


@runtime_checkable
class StoreProtocol(Protocol):
    """Parents and ``crawler_url`` children in the ``crawl_jobs`` table of the run's file.

    The integrity SQL reads ``crawl_jobs`` after the drain, so a store of your
    own keeps that table (the built-in columns: ``id, parent_id, job_type,
    status, total_urls, completed_urls, failed_urls, pending_urls``).
    """

    def save_parent(self, job_id: str, name: str, total: int) -> None:
        """A running parent expecting ``total`` children, all pending."""
        ...

    def create_child(
        self, job_id: str, parent_id: str, url: str, name: str = "", enqueue: Callable[[], Any] | None = None
    ) -> None:
        """Insert a pending child and call ``enqueue()`` (which sends its message).

        ``enqueue`` is only passed when the queue shares this store's connection
        (``queue.conn is store.conn``): then child row and message must commit in
        one transaction. Otherwise the harness sends the message itself after
        this call returned, and calls this again (with the same id) only if it
        raised.
        """
        ...

    def mark_running(self, job_id: str) -> None:
        """A worker started on the child (its status becomes ``running``)."""
        ...

    def record_attempt_failure(self, job_id: str, error: str) -> None:
        """An attempt failed and the message will be redelivered: back to ``pending``."""
        ...

    def finish_child(self, job_id: str, parent_id: str, *, failed: bool = False, error: str = "") -> bool:
        """Mark the child completed (or finally failed) and move the parent's counters.

        Atomic: the child's status and the parent's ``completed/failed/pending``
        counters change in ONE transaction, and the parent becomes ``completed``
        in it when its pending count reaches 0. Return ``False`` if the child had
        already finished: that is how a job processed twice is counted.
        """
        ...


# name -> (positional arguments the harness passes, how the contract spells it)
QUEUE_METHODS: dict[str, tuple[tuple[Any, ...], dict[str, Any], str]] = {
    "send": ((b"{}",), {}, "send(body: bytes) -> str"),
    "receive": ((), {}, "receive() -> Message | None"),
    "delete": (("m_0",), {}, "delete(message_id: str) -> bool"),
    "counts": ((), {}, "counts() -> QueueCounts"),
}
STORE_METHODS: dict[str, tuple[tuple[Any, ...], dict[str, Any], str]] = {
    "save_parent": (("p", "name", 1), {}, "save_parent(job_id, name, total)"),
    "create_child": (("c", "p", "url", "name"), {"enqueue": None},
                     "create_child(job_id, parent_id, url, name='', enqueue=None)"),
    "mark_running": (("c",), {}, "mark_running(job_id)"),
    "record_attempt_failure": (("c", "error"), {}, "record_attempt_failure(job_id, error)"),
    "finish_child": (("c", "p"), {"failed": False, "error": ""},
                     "finish_child(job_id, parent_id, *, failed=False, error='')"),
}


def _describe(obj: object) -> str:
    cls = type(obj)
    where = cls.__module__
    try:
        source = inspect.getsourcefile(cls)
    except TypeError:
        source = None
    return f"{cls.__qualname__} (from {source or where})"


def _check(obj: object, methods: dict[str, tuple[tuple[Any, ...], dict[str, Any], str]], what: str,
           origin: str) -> None:
    if obj is None:
        raise ProtocolError(f"{origin} returned None; it must return a {what} object.")
    problems: list[str] = []
    for name, (args, kwargs, spelled) in methods.items():
        method = getattr(obj, name, None)
        if method is None or not callable(method):
            problems.append(f"missing {spelled}")
            continue
        try:
            signature = inspect.signature(method)
        except (TypeError, ValueError):  # a builtin or C method: cannot tell, trust it
            continue
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            plain = signature.replace(
                parameters=[p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()],
                return_annotation=inspect.Signature.empty,
            )
            problems.append(f"{name}{plain} cannot be called as {spelled} ({exc})")
    if problems:
        contract = "pytest_quaero.core.protocols." + ("QueueProtocol" if what == "queue" else "StoreProtocol")
        raise ProtocolError(
            f"{origin} returned {_describe(obj)}, which is not a usable {what}: " + "; ".join(problems)
            + f". See {contract} for the contract."
        )


def check_queue(obj: object, origin: str = "pytest_quaero_make_queue") -> None:
    """Raise :class:`ProtocolError` naming every method the queue lacks or mis-declares."""
    _check(obj, QUEUE_METHODS, "queue", origin)


def check_store(obj: object, origin: str = "pytest_quaero_make_store") -> None:
    """Raise :class:`ProtocolError` naming every method the store lacks or mis-declares."""
    _check(obj, STORE_METHODS, "store", origin)
