"""The job a worker handles: its message body, what a handler gets, and the default handler.

Producers write each child job as a JSON message (:func:`encode_job`); a worker turns a
received message back into a :class:`Job` (:func:`decode_job`) and hands it, with its
:class:`JobContext`, to the handler: :class:`SimulatedWork` unless a user brings one.
Everything here is plain data, picklable for process-mode workers.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_quaero.core.queue import Message
from pytest_quaero.core.settings import Settings

__all__ = ["Handler", "Job", "JobContext", "SimulatedWork", "decode_job", "encode_job"]


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
    """The default job handler: sleep a seeded, per-job uniform time in ``[low, high]``.

    The time depends only on the seed and the job id, so a rerun with the same seed
    does the same work whichever worker gets which job. Picklable, for process mode.
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
            time.sleep(seconds)


#: what processes a job; raising leaves the message for redelivery
Handler = Callable[[Job, JobContext], None]
