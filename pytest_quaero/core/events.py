"""The external worker protocol, version 1: JSON lines a worker in any language writes.

A worker command (:mod:`pytest_quaero.core.external`) writes one JSON object per line to
the file descriptor the plugin passes in ``QUAERO_EVENTS_FD``: ``hello`` first, then what
each of its workers does. :class:`EventReader` checks each line against the protocol
(``pytest_quaero/schemas/worker-events-v1.schema.json`` says the same for other tools) and
turns it into the events the built-in pool reports (:mod:`pytest_quaero.core.worker`), so
every criterion, metric, report and baseline reads an external pool exactly like its own.
The database, not these events, still says which jobs finished.

Lock errors arrive one event each (``lock_error``) and are filed per worker and operation
the way :class:`~pytest_quaero.core.retry.Retrier` files its own; optional ``operation``
events make the operation and attempt counts exact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_quaero.core.retry import OpStats

__all__ = ["EVENT_FIELDS", "PROTOCOL_VERSION", "EventReader", "Hello", "ProtocolError"]

PROTOCOL_VERSION = 1

_NUMBER = (int, float)
#: every event and its required fields with their types (``hello`` has no ts/worker)
EVENT_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "hello": {"protocol": (int,), "language": (str,), "runtime": (str,)},
    "worker_started": {"worker": (int,), "ts": _NUMBER},
    "claimed": {"worker": (int,), "ts": _NUMBER, "message_id": (str,), "job_id": (str,), "delivery": (int,)},
    "job_finished": {"worker": (int,), "ts": _NUMBER, "job_id": (str,), "outcome": (str,)},
    "lock_error": {"worker": (int,), "ts": _NUMBER, "operation": (str,), "code": (str,), "retried": (bool,)},
    "operation": {"worker": (int,), "ts": _NUMBER, "operation": (str,), "attempts": (int,), "outcome": (str,)},
    "error": {"worker": (int,), "ts": _NUMBER, "message": (str,)},
    "crashed": {"worker": (int,), "ts": _NUMBER, "message": (str,)},
    "worker_stopped": {"worker": (int,), "ts": _NUMBER},
}
_OUTCOMES = ("completed", "failed", "duplicate", "error")
_OPERATION_OUTCOMES = ("ok", "exhausted", "error")
#: a lock error that came back within this share of busy_timeout did not wait it out (as Retrier judges)
_FAST_SHARE = 0.1


class ProtocolError(ValueError):
    """A line that is not protocol version 1; the message names the line number and shows the line."""


@dataclass
class Hello:
    """What a worker command said about itself."""

    language: str
    runtime: str
    protocol: int
    libraries: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


Emit = Callable[[tuple[Any, ...]], None]


class EventReader:
    """Reads one worker process's event lines and emits the built-in pool's events.

    ``workers`` are the pool indexes this process may speak for; ``clock_offset`` is
    ``time.time() - time.monotonic()``, to put the worker's wall-clock ``ts`` on the
    run's monotonic clock.
    """

    def __init__(self, name: str, workers: range, emit: Emit, *, clock_offset: float, busy_timeout_ms: int) -> None:
        self.name, self.workers, self.emit = name, workers, emit
        self.clock_offset = clock_offset
        self.fast_seconds = busy_timeout_ms / 1000 * _FAST_SHARE
        self.hello: Hello | None = None
        self.line_number = 0
        self.stats: dict[int, dict[str, OpStats]] = {index: {} for index in workers}
        self.counted_operations: set[tuple[int, str]] = set()
        self.claims: dict[int, tuple[str, str, float, int]] = {}
        self.started: set[int] = set()
        self.stopped: set[int] = set()
        self.jobs_finished = 0
        # built once: feed() runs for every line a worker prints
        self._handlers: dict[str, Callable[[int, dict[str, Any], str], None]] = {
            "worker_started": self._worker_started, "claimed": self._claimed, "job_finished": self._job_finished,
            "lock_error": self._lock_error, "operation": self._operation, "error": self._error_event,
            "crashed": self._crashed, "worker_stopped": self._worker_stopped,
        }

    # ------------------------------------------------------------ reading

    def feed(self, raw: bytes | str) -> None:
        """One line as read; raises ProtocolError for anything that is not protocol v1."""
        self.line_number += 1
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        text = text.rstrip("\r\n")
        if not text.strip():
            return  # a blank line carries nothing: tolerated
        try:
            event = json.loads(text)
        except ValueError as exc:
            raise self._error(text, f"not JSON ({exc.args[0] if exc.args else exc})") from None
        if not isinstance(event, dict):
            raise self._error(text, "not a JSON object")
        kind = event.get("event")
        if kind not in EVENT_FIELDS:
            known = ", ".join(EVENT_FIELDS)
            raise self._error(text, f"unknown event {kind!r}; protocol {PROTOCOL_VERSION} events: {known}")
        if kind != "hello" and self.hello is None:
            raise self._error(text, "the first event must be hello")
        for key, types in EVENT_FIELDS[kind].items():
            value = event.get(key)
            # bool is an int in Python; a worker index or count must not be true/false
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                wanted = " or ".join(t.__name__ for t in types)
                raise self._error(text, f"{kind}: field {key!r} must be {wanted}, got {json.dumps(value)}")
        if kind == "hello":
            self._hello(event, text)
            return
        worker = event["worker"]
        if worker not in self.workers:
            raise self._error(text, f"worker {worker} is not one of this process's workers "
                                    f"({self.workers.start}..{self.workers.stop - 1})")
        if not math.isfinite(event["ts"]):
            raise self._error(text, "ts must be a finite number (unix time, seconds)")
        self._handlers[kind](worker, event, text)

    def _error(self, text: str, reason: str) -> ProtocolError:
        shown = text if len(text) <= 200 else text[:197] + "..."
        return ProtocolError(f"{self.name}: line {self.line_number} of its events is not valid protocol: "
                             f"{reason}: {shown}")

    def _mono(self, event: Mapping[str, Any]) -> float:
        return float(event["ts"]) - self.clock_offset

    # ------------------------------------------------------------ events

    def _hello(self, event: dict[str, Any], text: str) -> None:
        if self.hello is not None:
            raise self._error(text, "a second hello")
        if event["protocol"] != PROTOCOL_VERSION:
            raise self._error(text, f"it speaks protocol version {event['protocol']}, this plugin speaks "
                                    f"version {PROTOCOL_VERSION}")
        libraries = event.get("libraries") or {}
        if not isinstance(libraries, dict):
            raise self._error(text, "hello: field 'libraries' must be an object of name: version")
        self.hello = Hello(event["language"], event["runtime"], event["protocol"],
                           {str(k): str(v) for k, v in libraries.items()}, event)

    def _worker_started(self, worker: int, event: dict[str, Any], text: str) -> None:
        self.started.add(worker)
        self.emit(("started", worker, float(event["ts"]), self._mono(event)))

    def _claimed(self, worker: int, event: dict[str, Any], text: str) -> None:
        self.claims[worker] = (event["message_id"], event["job_id"], self._mono(event), event["delivery"])

    def _job_finished(self, worker: int, event: dict[str, Any], text: str) -> None:
        outcome = event["outcome"]
        if outcome not in _OUTCOMES:
            raise self._error(text, f"job_finished: outcome must be one of {', '.join(_OUTCOMES)}")
        done_at = self._mono(event)
        claim = self.claims.pop(worker, None)
        if claim is not None and claim[1] == event["job_id"]:
            received_at, delivery = claim[2], claim[3]
        else:  # no claim seen for it: the duration the worker measured places the receive
            duration = event.get("duration_ms")
            received_at = done_at - (float(duration) / 1000 if isinstance(duration, _NUMBER) else 0.0)
            delivery = 1
        latency = event.get("latency_ms")
        latency_s = max(0.0, float(latency) / 1000) if isinstance(latency, _NUMBER) else 0.0
        self.jobs_finished += 1
        self.emit(("job", worker, event["job_id"], outcome, received_at, done_at, latency_s, delivery))
        if outcome == "error" and event.get("error"):
            self.emit(("error", worker, f"job {event['job_id']}: {event['error']}"))

    def _stats(self, worker: int, operation: str) -> OpStats:
        return self.stats[worker].setdefault(operation, OpStats())

    def _lock_error(self, worker: int, event: dict[str, Any], text: str) -> None:
        stats = self._stats(worker, event["operation"])
        stats.busy_events += 1
        stats.codes[event["code"]] += 1
        waited = event.get("waited_ms")
        if isinstance(waited, _NUMBER) and not isinstance(waited, bool):
            stats.busy_wait_seconds += max(0.0, float(waited)) / 1000
            if float(waited) / 1000 < self.fast_seconds:
                stats.fast_busy += 1
        if not event["retried"]:
            stats.exhausted += 1
        if (worker, event["operation"]) not in self.counted_operations:
            # without operation events: each lock error is an attempt, a first one starts a retried operation
            stats.attempts += 1
            if event.get("attempt") == 1 and event["retried"]:
                stats.retried_operations += 1
        self.emit(("busy", worker, event["code"]))

    def _operation(self, worker: int, event: dict[str, Any], text: str) -> None:
        outcome = event["outcome"]
        if outcome not in _OPERATION_OUTCOMES:
            raise self._error(text, f"operation: outcome must be one of {', '.join(_OPERATION_OUTCOMES)}")
        key = (worker, event["operation"])
        stats = self._stats(*key)
        if key not in self.counted_operations:
            # the first operation event makes this operation's counts exact: forget the estimate
            self.counted_operations.add(key)
            stats.attempts = stats.retried_operations = 0
        stats.operations += 1
        stats.attempts += max(1, event["attempts"])
        if event["attempts"] > 1:
            stats.retried_operations += 1
            if outcome == "ok":
                stats.successful_retries += 1
        if outcome == "error":
            stats.other_errors += 1

    def _error_event(self, worker: int, event: dict[str, Any], text: str) -> None:
        where = f"{event['operation']}: " if isinstance(event.get("operation"), str) else ""
        self.emit(("error", worker, f"{where}{event['message']}"))

    def _crashed(self, worker: int, event: dict[str, Any], text: str) -> None:
        origin = event.get("origin") if isinstance(event.get("origin"), str) else "unknown"
        self.emit(("error", worker, f"worker crashed: {event['message']}"))
        self.emit(("crashed", worker, event["message"], origin))

    def _worker_stopped(self, worker: int, event: dict[str, Any], text: str) -> None:
        if worker in self.stopped:
            raise self._error(text, f"worker {worker} stopped twice")
        busy = event.get("busy_ms")
        busy_s = float(busy) / 1000 if isinstance(busy, _NUMBER) and not isinstance(busy, bool) else 0.0
        self.stopped.add(worker)
        self.emit(("stopped", worker, self._mono(event), busy_s, self.snapshot(worker)))

    def snapshot(self, worker: int) -> dict[str, dict[str, Any]]:
        return {op: stats.as_dict() for op, stats in self.stats[worker].items()}

    # ------------------------------------------------------------ the end

    def finish(self, now: float, why: str | None) -> None:
        """The process ended: every worker that did not say it stopped is stopped here.

        ``why`` (the process's exit, when it was not asked to stop) makes each such worker
        a crashed one, with the job it had claimed named: that job stays unfinished in the
        database, to be redelivered after the visibility timeout, never counted completed.
        """
        for worker in self.workers:
            if worker in self.stopped:
                continue
            if why is not None:
                claim = self.claims.get(worker)
                held = f"; it had claimed job {claim[1]} (message {claim[0]})" if claim else ""
                self.emit(("error", worker, f"worker ended without stopping: {why}{held}"))
                self.emit(("crashed", worker, f"{why}{held}", self.name))
            self.stopped.add(worker)
            self.emit(("stopped", worker, now, 0.0, self.snapshot(worker)))

