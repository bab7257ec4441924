"""The adapter meets pytest-quaero's queue contract (checked the way the plugin checks it)."""

from persist_queue_adapter import PersistQueueAdapter

from pytest_quaero import check_queue


def test_adapter_meets_the_contract(tmp_path):
    queue = PersistQueueAdapter(str(tmp_path / "jobs.db"), "quaero_jobs")
    try:
        check_queue(queue)
        message_id = queue.send(b'{"id": "job-1"}')
        assert queue.counts().visible == 1
        message = queue.receive()
        assert (message.id, message.body) == (message_id, b'{"id": "job-1"}')
        assert queue.receive() is None
        assert queue.counts().in_flight == 1
        assert queue.delete(message.id) is True
        assert queue.counts().total == 0
    finally:
        queue.close()


def test_a_new_queue_object_hands_out_messages_another_worker_holds(tmp_path):
    """What the scenario's duplicates come from (one of two ways): ``auto_resume=True``,
    the default, turns EVERY unacked message back to ready whenever a queue object is
    created, including those another worker is processing right now."""
    path = str(tmp_path / "jobs.db")
    worker_1 = PersistQueueAdapter(path, "quaero_jobs")
    worker_1.send(b'{"id": "job-1"}')
    claimed = worker_1.receive()
    assert claimed is not None and worker_1.receive() is None
    worker_2 = PersistQueueAdapter(path, "quaero_jobs")  # e.g. a worker starting its stagger later
    try:
        again = worker_2.receive()
        assert again is not None and again.body == claimed.body  # the same job, twice
    finally:
        worker_1.close()
        worker_2.close()
