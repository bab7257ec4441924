"""The adapter meets pytest-quaero's queue contract (checked the way the plugin checks it)."""

from huey_adapter import HueyAdapter

from pytest_quaero import check_queue


def test_adapter_meets_the_contract(tmp_path):
    queue = HueyAdapter(str(tmp_path / "jobs.db"), "quaero_jobs")
    try:
        check_queue(queue)
        message_id = queue.send(b'{"id": "job-1"}')
        assert queue.counts().visible == 1
        message = queue.receive()
        assert (message.id, message.body) == (message_id, b'{"id": "job-1"}')
        assert queue.receive() is None
        assert queue.counts().total == 0  # at-most-once: gone as soon as it is received
    finally:
        queue.close()
