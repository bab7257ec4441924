"""The worker protocol's reader (issue 15): each line checked, each event turned into the pool's own,
lock errors filed per operation the way the built-in retry wrapper files them."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from pytest_quaero.core.events import EVENT_FIELDS, PROTOCOL_VERSION, EventReader, ProtocolError

HELLO = {"event": "hello", "protocol": 1, "language": "go", "runtime": "go1.26.8",
         "libraries": {"maragu.dev/goqite": "v0.4.0"}}


def reader(events: list[tuple[Any, ...]], workers: range = range(0, 2)) -> EventReader:
    return EventReader("worker command", workers, events.append, clock_offset=1000.0, busy_timeout_ms=10_000)


def feed(target: EventReader, *events: dict[str, Any]) -> None:
    for event in events:
        target.feed(json.dumps(event).encode() + b"\n")


def test_a_job_becomes_the_pools_job_event_on_the_runs_clock() -> None:
    events: list[tuple[Any, ...]] = []
    target = reader(events)
    feed(target, HELLO,
         {"event": "worker_started", "worker": 1, "ts": 1010.0},
         {"event": "claimed", "worker": 1, "ts": 1011.0, "message_id": "m_1", "job_id": "j1", "delivery": 2},
         {"event": "job_finished", "worker": 1, "ts": 1011.5, "message_id": "m_1", "job_id": "j1",
          "outcome": "completed", "latency_ms": 250},
         {"event": "worker_stopped", "worker": 1, "ts": 1012.0, "busy_ms": 500})
    assert target.hello is not None and target.hello.libraries == {"maragu.dev/goqite": "v0.4.0"}
    assert events[0] == ("started", 1, 1010.0, 10.0)
    assert events[1] == ("job", 1, "j1", "completed", 11.0, 11.5, 0.25, 2)  # a second delivery
    assert events[2] == ("stopped", 1, 12.0, 0.5, {})


def test_lock_errors_are_filed_per_operation_with_their_codes() -> None:
    events: list[tuple[Any, ...]] = []
    target = reader(events)
    lock = {"event": "lock_error", "worker": 0, "ts": 1001.0, "operation": "queue_delete"}
    feed(target, HELLO,
         {**lock, "code": "SQLITE_BUSY", "attempt": 1, "retried": True, "waited_ms": 10_002},
         {**lock, "code": "SQLITE_BUSY_SNAPSHOT", "attempt": 2, "retried": False, "waited_ms": 0.2},
         {"event": "worker_stopped", "worker": 0, "ts": 1002.0})
    assert [event[:3] for event in events[:2]] == [("busy", 0, "SQLITE_BUSY"), ("busy", 0, "SQLITE_BUSY_SNAPSHOT")]
    stats = events[2][4]["queue_delete"]
    assert stats["busy_events"] == 2 and stats["exhausted"] == 1
    assert stats["codes"] == {"SQLITE_BUSY": 1, "SQLITE_BUSY_SNAPSHOT": 1}
    assert stats["fast_busy"] == 1  # 0.2 ms against a 10 s timeout: no timeout cures that
    assert stats["retried_operations"] == 1


def test_operation_events_make_the_counts_exact() -> None:
    events: list[tuple[Any, ...]] = []
    target = reader(events)
    op = {"event": "operation", "worker": 0, "ts": 1001.0, "operation": "save_job"}
    feed(target, HELLO,
         {"event": "lock_error", "worker": 0, "ts": 1001.0, "operation": "save_job", "code": "SQLITE_BUSY",
          "attempt": 1, "retried": True},
         {**op, "attempts": 2, "outcome": "ok"}, {**op, "attempts": 1, "outcome": "ok"},
         {**op, "attempts": 1, "outcome": "error"})
    target.finish(5.0, None)
    stats = next(event for event in events if event[:2] == ("stopped", 0))[4]["save_job"]
    assert (stats["operations"], stats["attempts"], stats["retried_operations"], stats["successful_retries"],
            stats["other_errors"]) == (3, 4, 1, 1, 1)


def test_a_process_that_ends_unasked_leaves_its_workers_crashed_with_their_claims() -> None:
    events: list[tuple[Any, ...]] = []
    target = reader(events)
    feed(target, HELLO, {"event": "claimed", "worker": 0, "ts": 1001.0, "message_id": "m_9", "job_id": "j9",
                         "delivery": 1},
         {"event": "worker_stopped", "worker": 1, "ts": 1001.0})
    target.finish(7.0, "worker command exited with code 137 before the run stopped it")
    crashed = [event for event in events if event[0] == "crashed"]
    assert crashed == [("crashed", 0, "worker command exited with code 137 before the run stopped it; it had "
                                      "claimed job j9 (message m_9)", "worker command")]
    assert [event[1] for event in events if event[0] == "stopped"] == [1, 0]


@pytest.mark.parametrize(("line", "reason"), [
    (b"Starting workers", "line 1 of its events is not valid protocol: not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"event": "claimed", "worker": 0, "ts": 1}', "the first event must be hello"),
    (b'{"event": "hello", "protocol": 2, "language": "go", "runtime": "x"}', "it speaks protocol version 2"),
    (b'{"event": "hello", "protocol": true, "language": "go", "runtime": "x"}', "field 'protocol' must be int"),
    (b'{"event": "helo", "protocol": 1}', "unknown event 'helo'; protocol 1 events: hello, worker_started"),
])
def test_a_line_that_is_not_protocol(line: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason.replace("(", r"\(").replace("[", r"\[")) as raised:
        reader([]).feed(line)
    assert raised.value.args[0].startswith("worker command: line 1 of its events is not valid protocol: ")


@pytest.mark.parametrize(("event", "reason"), [
    ({"event": "worker_started", "worker": 5, "ts": 1.0}, "worker 5 is not one of this process's workers (0..1)"),
    ({"event": "job_finished", "worker": 0, "ts": 1.0, "job_id": "j", "outcome": "done"}, "outcome must be one of"),
    ({"event": "lock_error", "worker": 0, "ts": 1.0, "operation": "x", "code": "SQLITE_BUSY"}, "'retried' must be"),
    ({"event": "worker_started", "worker": "0", "ts": 1.0}, "field 'worker' must be int"),
])
def test_an_event_that_breaks_the_protocol_after_hello(event: dict[str, Any], reason: str) -> None:
    target = reader([])
    feed(target, HELLO)
    with pytest.raises(ProtocolError, match="line 2 of its events") as raised:
        feed(target, event)
    assert reason in str(raised.value)


def test_the_shipped_schema_says_what_the_reader_checks() -> None:
    text = resources.files("pytest_quaero").joinpath("schemas/worker-events-v1.schema.json").read_text()
    schema = json.loads(text)
    by_event = {entry["properties"]["event"]["const"]: entry for entry in schema["oneOf"]}
    assert set(by_event) == set(EVENT_FIELDS)
    for name, fields in EVENT_FIELDS.items():
        assert set(by_event[name]["required"]) == {"event", *fields}, name
    assert by_event["hello"]["properties"]["protocol"]["const"] == PROTOCOL_VERSION
