"""The adapter meets pytest-quaero's queue contract (checked the way the plugin checks it)."""

from django_q2_adapter import DjangoQ2Adapter, migrate

from pytest_quaero import check_queue


def test_adapter_meets_the_contract(tmp_path):
    path = str(tmp_path / "jobs.db")
    migrate(path, "quaero_jobs")
    queue = DjangoQ2Adapter(path, "quaero_jobs")
    try:
        check_queue(queue)
        message_id = queue.send(b'{"id": "job-1"}')
        assert queue.counts().visible == 1
        message = queue.receive()
        assert (message.id, message.body) == (message_id, b'{"id": "job-1"}')
        assert queue.receive() is None
        assert queue.counts().in_flight == 1  # claimed until django-q2's `retry` (60 s) passes
        assert queue.delete(message.id) is True
        assert queue.counts().total == 0
    finally:
        queue.close()
