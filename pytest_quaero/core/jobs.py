"""The job a worker handles: its message body, what a handler gets, and the default handler.

Producers write each child job as a JSON message (:func:`encode_job`); a worker turns a
received message back into a :class:`Job` (:func:`decode_job`) and hands it, with its
:class:`JobContext`, to the handler: :class:`SimulatedWork` unless a user brings one.
Everything here is plain data, picklable for process-mode workers.

A job's context carries the pool's cancel signal: a handler that waits (as
:class:`SimulatedWork` does) waits on it, so a pool stopped with ``cancel=True`` (Ctrl-C,
SIGTERM, a deadline) cuts the wait short and the handler raises :class:`JobInterrupted`:
the job is not finished, and its message comes back after the visibility timeout, as it
would in production after a worker died mid-job. A graceful stop (``restart-pool``) lets
each job finish.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pytest_quaero.core.queue import Message
from pytest_quaero.core.settings import Settings

__all__ = [
    "Handler",
    "Job",
    "JobContext",
    "JobInterrupted",
    "SimulatedWork",
    "StopSignal",
    "decode_job",
    "encode_job",
]


class StopSignal(Protocol):
    """A ``threading.Event`` (thread mode) or a ``multiprocessing`` Event (process mode)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class JobInterrupted(Exception):
    """The pool stopped while a handler was working: the job stays unfinished (its row is not
    completed, its message is not deleted) and is delivered again after the visibility timeout."""


@dataclass(frozen=True)
class Job:
    """A received child job: what a handler gets to work on."""

    job_id: str
    parent_id: str
    url: str
    job_type: str
    message_id: str
    attempt: int
    enqueued_at: float
    body: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class JobContext:
    """Where a job runs: the worker, its settings, and the database it works on."""

    worker: str
    worker_index: int
    settings: Settings
    db_path: str
    #: set when the pool stops and cuts jobs in progress short (Ctrl-C, SIGTERM, a deadline);
    #: a handler that waits should wait on it (:meth:`pause`) and raise JobInterrupted when set
    cancel: StopSignal | None = field(default=None, compare=False, repr=False)

    def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or raise :class:`JobInterrupted` as soon as the pool cancels its jobs."""
        if self.cancel is None:
            time.sleep(seconds)
        elif self.cancel.wait(seconds):
            raise JobInterrupted(f"{self.worker}: the pool stopped during the job")


# json.dumps() with non-default separators builds a new JSONEncoder on every call; one shared
# encoder with the same options writes the same bytes for a fraction of the cost per message.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode_job(job_id: str, parent_id: str, url: str, job_type: str = "crawler_url") -> bytes:
    """The message body: JSON, as Quaero enqueued its JobMessage."""
    return _ENCODER.encode(
        {"id": job_id, "type": job_type, "parent_id": parent_id, "url": url, "created_at": time.time()}
    ).encode()


def decode_job(message: Message) -> Job:
    """A received message as the job it carries (the body's ``created_at`` becomes ``enqueued_at``)."""
    body = json.loads(message.body)
    return Job(
        job_id=body["id"],
        parent_id=body.get("parent_id", ""),
        url=body.get("url", ""),
        job_type=body.get("type", "crawler_url"),
        message_id=message.id,
        attempt=message.received,
        enqueued_at=float(body.get("created_at", 0.0)),
        body=body,
    )


class SimulatedWork:
    """The default job handler: wait a seeded, per-job uniform time in ``[low, high]``.

    The time depends only on the seed and the job id, so a rerun with the same seed
    does the same work whichever worker gets which job. The wait is on the pool's cancel
    signal (:meth:`JobContext.pause`), so a cancelling pool does not wait out a long job:
    the job raises :class:`JobInterrupted` and stays unfinished. Picklable, for process mode.
    """

    def __init__(self, low: float, high: float, seed: int = 0) -> None:
        self.low, self.high, self.seed = low, high, seed

    def duration(self, job_id: str) -> float:
        if self.high <= self.low:
            return self.low
        return random.Random(f"{self.seed}:{job_id}").uniform(self.low, self.high)

    def __call__(self, job: Job, context: JobContext) -> None:
        seconds = self.duration(job.job_id)
        if seconds > 0:
            context.pause(seconds)


#: what processes a job; raising leaves the message for redelivery
Handler = Callable[[Job, JobContext], None]
