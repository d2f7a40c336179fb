"""Nothing accepted is lost: submissions while RabbitMQ is down, and while a queue is full."""
import json
import subprocess

from django.db import transaction

from apps.jobs import services
from apps.jobs.models import Job
from config import broker
from config.celery import app as celery_app
from tests.integration.conftest import wait_until


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def test_jobs_submitted_while_rabbitmq_is_stopped_all_succeed_after_it_returns(
    worker, start_relay, api_client, client
):
    rabbitmqctl("stop_app")
    try:
        responses = [
            api_client.post(
                "/api/jobs/", data=json.dumps({"kind": "diagnostics.noop", "params": {}}),
                content_type="application/json",
            )
            for _ in range(50)
        ]
        ready, health = client.get("/readyz"), client.get("/healthz")
    finally:
        rabbitmqctl("start_app")
    rabbitmqctl("await_startup")

    assert [r.status_code for r in responses] == [202] * 50
    assert ready.status_code == 503 and ready.json()["broker"].startswith("unavailable")
    assert health.status_code == 200
    assert Job.objects.filter(published_at__isnull=True).count() == 50  # all waiting in the outbox

    start_relay()  # nobody acts: the relay and the worker pick up where they left off
    wait_until(
        lambda: Job.objects.filter(status=Job.Status.SUCCEEDED).count() == 50, timeout=120,
        what="all 50 jobs to succeed",
    )
    assert client.get("/readyz").status_code == 200


def test_jobs_beyond_a_full_queue_wait_in_the_outbox_and_are_published_when_it_drains(worker, settings):
    capacity = settings.CONVEYOR_QUEUE_MAX_LENGTHS["held"]
    submitted = capacity + 2  # what waits fits in the drained queue again
    jobs = []
    for _ in range(submitted):
        with transaction.atomic():
            job, created = services.job_submit(kind="tests.held", params={}, submitted_by=None)
        assert created
        jobs.append(job)

    ours = Job.objects.filter(id__in=[job.id for job in jobs])
    published = ours.filter(published_at__isnull=False).count()
    # A quorum queue checks its limit just before it takes a message, so it may hold one over.
    assert capacity <= published <= capacity + 1
    waiting = submitted - published
    assert ours.filter(published_at__isnull=True, status=Job.Status.QUEUED).count() == waiting  # recorded, not lost

    with celery_app.connection_for_write() as conn:  # a consumer drains the queue
        queue = broker.job_queue("held")(conn.default_channel)
        while queue.get(no_ack=True) is not None:
            pass

    settings.CONVEYOR_RELAY_GRACE_SECONDS = 0
    assert services.outbox_relay() == waiting
    assert ours.filter(published_at__isnull=True).count() == 0
