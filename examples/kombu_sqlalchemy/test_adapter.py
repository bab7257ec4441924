"""The adapter meets pytest-quaero's queue contract (checked the way the plugin checks it)."""

from kombu_adapter import KombuAdapter, create_queue

from pytest_quaero import check_queue


def test_adapter_meets_the_contract(tmp_path):
    path = str(tmp_path / "jobs.db")
    create_queue(path, "quaero_jobs")
    queue = KombuAdapter(path, "quaero_jobs")
    try:
        check_queue(queue)
        assert queue.send(b'{"id": "job-1"}') is None  # kombu gives no id: the plugin keys by the body's id
        assert queue.counts().visible == 1
        fetched = queue.receive()
        assert fetched.body == '{"id": "job-1"}'
        assert queue.receive() is None
        assert queue.delete(fetched) is True
        counts = queue.counts()
        # kept, invisible: the row counts in total and in nothing else, i.e. acknowledged and retained
        assert (counts.total, counts.visible, counts.in_flight, counts.dead) == (1, 0, 0, 0)
    finally:
        queue.close()


def test_a_fetched_message_is_never_delivered_again(tmp_path):
    """At-most-once: the transport hides a message when it is fetched, not when it is acked."""
    path = str(tmp_path / "jobs.db")
    create_queue(path, "quaero_jobs")
    worker_1, worker_2 = KombuAdapter(path, "quaero_jobs"), KombuAdapter(path, "quaero_jobs")
    try:
        worker_1.send(b'{"id": "job-1"}')
        assert worker_1.receive() is not None  # never acked: the worker died, say
        assert worker_2.receive() is None and worker_1.receive() is None
    finally:
        worker_1.close()
        worker_2.close()
