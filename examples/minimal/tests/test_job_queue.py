"""Tests of a goqite-style job queue with pytest-quaero's fixtures and marker.

``quaero_queue``/``quaero_store`` are the queue and crawl-job store on a fresh
WAL-mode SQLite file; ``quaero_run`` runs a whole load scenario (workers,
producers, integrity SQL) and returns its judged result.
"""

from __future__ import annotations

import json

import pytest


def test_a_claimed_message_is_invisible_until_deleted(quaero_queue):
    message_id = quaero_queue.send(json.dumps({"id": "job-1"}).encode())
    message = quaero_queue.receive()
    assert message is not None and message.id == message_id and message.received == 1
    assert quaero_queue.receive() is None  # claimed: no second worker gets it
    assert quaero_queue.delete(message_id) is True
    assert quaero_queue.delete(message_id) is False  # a repeated ack is visible as such
    assert quaero_queue.counts().total == 0


def test_parent_progress_moves_with_its_children(quaero_store):
    quaero_store.save_parent("p1", "Crawl job 1", total=2)
    for child in ("c1", "c2"):
        quaero_store.create_child(child, "p1", f"http://test-server/{child}")
    assert quaero_store.finish_child("c1", "p1") is True
    assert quaero_store.finish_child("c1", "p1") is False  # a second delivery is counted, not applied
    assert quaero_store.get("p1")["status"] == "running"
    quaero_store.finish_child("c2", "p1")
    parent = quaero_store.get("p1")
    assert (parent["completed_urls"], parent["pending_urls"], parent["status"]) == (2, 0, "completed")


COUNTED = ("sqlite_busy_errors", "queue_deletion", "hierarchy_integrity", "completion_rate",
           "no_duplicate_processing")


@pytest.mark.quaero_scenario(parents=3, children=10, stagger="100ms", job_time="1ms", poll_interval="50ms")
def test_a_small_tree_drains_cleanly(quaero_run):
    result = quaero_run()
    verdicts = {v["criterion"]: v for v in result.verdicts}
    # The counting criteria are exact; timings are left to the scenario items.
    failed = [f"{key}: {verdicts[key]['measured']}" for key in COUNTED if not verdicts[key]["passed"]]
    assert not failed, failed
    assert result.jobs_completed == 30 and result.busy_errors == 0
