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
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing the plugin stays free of the queue module
    from pytest_quaero.core.queue import Message, QueueCounts

__all__ = [
    "QUEUE_METHODS",
    "STORE_METHODS",
    "AdaptedQueue",
    "CountsSeen",
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

    def send(self, body: bytes) -> str | None:
        """Enqueue one message; return its id, or ``None``. Atomic: one transaction.

        ``body`` is the JSON job message; hand it back byte for byte in
        :meth:`receive`. A library that gives no id at enqueue may return ``None``: the
        plugin correlates each message with its job by the key it put into the body
        (the job id, ``"id"``), which is also the message's id when a received object has none.
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

        Or return the library's own object, or a ``Message`` subclass carrying it: anything
        with a ``body`` (bytes or str), and ``received`` and ``id`` if it has them (else 1,
        and the job id from the body). :meth:`delete` then gets that very object back,
        so an adapter acks through what it fetched, without an id map of its own.
        """
        ...

    def delete(self, message_id: str) -> bool:
        """Acknowledge a processed message; ``False`` if it was already gone. Atomic.

        Gets the message's id when :meth:`receive` returned a plain ``Message``, else the
        object :meth:`receive` returned. A queue that keeps acknowledged rows (marked
        done, or made invisible) acknowledges here; deleting is not required.
        """
        ...

    def counts(self) -> QueueCounts:
        """This queue's messages now: ``total`` (rows still held), ``visible`` (receivable
        now), ``in_flight`` (claimed or delayed), ``dead`` (given up: never delivered again).

        A queue that keeps acknowledged messages counts them in ``total`` and in none of
        the other three: what ``total`` holds beyond ``visible + in_flight + dead`` is
        *acknowledged and retained* (or set an ``acked`` attribute saying how many). The
        run watches ``visible + in_flight`` to know when the queue drained, reads it once
        more for ``messages_left`` and ``dead_messages``, and reports the acknowledged ones
        apart: the deletion criterion then reads "acknowledged", and a job whose message
        was acknowledged without the job finishing is a lost job, never "0 messages left".
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
    "send": ((b"{}",), {}, "send(body: bytes) -> str | None"),
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


# ------------------------------------------------------------------ what the harness sees of a hook's queue


class CountsSeen:
    """A hook queue's ``counts()`` as the run reads it: ``total`` is what is left to deliver or dead.

    ``acked`` is what the queue keeps after acknowledging it (0 for a queue that deletes);
    ``visible``, ``in_flight`` and ``dead`` are the queue's own figures.
    """

    __slots__ = ("acked", "dead", "in_flight", "total", "visible")

    def __init__(self, visible: int, in_flight: int, dead: int, acked: int) -> None:
        self.visible, self.in_flight, self.dead, self.acked = visible, in_flight, dead, acked
        self.total = visible + in_flight + dead

    def __repr__(self) -> str:
        return (f"CountsSeen(total={self.total}, visible={self.visible}, in_flight={self.in_flight}, "
                f"dead={self.dead}, acked={self.acked})")


def correlation_key(body: bytes | str) -> str:
    """The key the plugin put into a message body (its job's id), or ``?`` when there is none."""
    try:
        found = json.loads(body)
    except ValueError:
        return "?"
    return str(found.get("id", "?")) if isinstance(found, dict) else "?"


class AdaptedQueue:
    """A hook's queue, seen through the contract's newer, looser forms (see :class:`QueueProtocol`).

    ``send`` may return ``None`` (the job id in the body is the key then), ``receive`` may return
    the library's own object (``delete`` gets it back: the plugin keeps the id -> object map, the
    adapter need not), ``counts`` may report acknowledged-but-retained messages. Anything else
    (``conn``, ``close``, a fault injector's attributes) is the queue's own.
    """

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self._claimed: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)

    def send(self, body: bytes) -> str:
        sent = self.queue.send(body)
        return correlation_key(body) if sent is None else str(sent)

    def receive(self) -> Message | None:
        from pytest_quaero.core.queue import Message  # deferred: only a running worker receives

        got = self.queue.receive()
        if got is None or type(got) is Message:
            return got
        body = got.body
        if isinstance(body, str):
            body = body.encode()
        message_id = getattr(got, "id", None)
        message = Message(correlation_key(body) if message_id is None else str(message_id), bytes(body),
                          int(getattr(got, "received", 1) or 1))
        # kept until acked; a message left for redelivery is replaced when it comes back
        self._claimed[message.id] = got
        return message

    def delete(self, message_id: str) -> bool:
        claimed = self._claimed.pop(message_id, None)
        return bool(self.queue.delete(message_id if claimed is None else claimed))

    def counts(self) -> CountsSeen:
        counts = self.queue.counts()
        visible, in_flight, dead = int(counts.visible), int(counts.in_flight), int(counts.dead)
        acked = getattr(counts, "acked", None)
        if acked is None:  # what total holds beyond the three is acknowledged and retained
            acked = int(counts.total) - visible - in_flight - dead
        return CountsSeen(visible, in_flight, dead, max(0, int(acked)))

    def close(self) -> None:
        close = getattr(self.queue, "close", None)
        if callable(close):
            close()
