"""Nothing accepted is lost: submissions while RabbitMQ is down, and while a queue is full."""
import json
import subprocess
import time

import pytest
from django.db import transaction

from apps.jobs import services
from apps.jobs.models import Job
from config import broker
from config.celery import app as celery_app
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def test_jobs_submitted_while_rabbitmq_is_stopped_all_succeed_after_it_returns(worker, api_client, client):
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
        waiting = Job.objects.filter(published_at__isnull=True).count()
    finally:
        rabbitmqctl("start_app")
    rabbitmqctl("await_startup")

    assert [r.status_code for r in responses] == [202] * 50
    assert ready.status_code == 503 and ready.json()["broker"].startswith("unavailable")
    assert health.status_code == 200
    assert waiting == 50  # all recorded, waiting in the outbox while RabbitMQ was down

    # Nobody acts: the relay and the worker pick up where they left off.
    wait_until(
        lambda: Job.objects.filter(status=Job.Status.SUCCEEDED).count() == 50, timeout=120,
        what="all 50 jobs to succeed",
    )
    assert client.get("/readyz").status_code == 200


def published_within(job: Job, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if Job.objects.filter(id=job.id, published_at__isnull=False).exists():
            return True
        time.sleep(0.05)
    return False


def submit_held() -> Job:
    with transaction.atomic():
        job, created = services.job_submit(kind="tests.held", params={}, submitted_by=None)
    assert created
    return job


def test_jobs_beyond_a_full_queue_wait_in_the_outbox_and_are_published_when_it_drains(worker, settings):
    # given a queue nothing consumes, filled one job at a time until RabbitMQ refuses one
    capacity = settings.CONVEYOR_QUEUE_MAX_LENGTHS["held"]
    for _ in range(capacity + 2):
        if not published_within(submit_held(), seconds=3):
            break
    else:
        raise AssertionError(f"The held queue took {capacity + 2} jobs; its limit is {capacity}.")
    held = Job.objects.filter(kind="tests.held")
    published = held.filter(published_at__isnull=False).count()
    # A quorum queue checks its limit just before it takes a message, so it may hold one over.
    assert capacity <= published <= capacity + 1
    # when more jobs are submitted while it is full
    late = [submit_held() for _ in range(3)]
    # then the relay tries them again and again (each claim raises a job's generation), RabbitMQ refusing each,
    # and they wait in the outbox, recorded and not lost
    wait_until(lambda: all(job.generation >= 3 for job in Job.objects.filter(id__in=[j.id for j in late])),
               timeout=30, what="the relay to try the late jobs three times")
    waiting = held.filter(published_at__isnull=True, status=Job.Status.QUEUED).count()
    assert waiting == 4 and held.count() == published + waiting

    with celery_app.connection_for_write() as conn:  # a consumer drains the queue
        queue = broker.job_queue("held")(conn.default_channel)
        while queue.get(no_ack=True) is not None:
            pass

    # and once the queue has room the relay publishes every one of them
    wait_until(lambda: not held.filter(published_at__isnull=True).exists(), timeout=30,
               what="the relay to publish the jobs that waited")
    with celery_app.connection_for_write() as conn:
        queue = broker.job_queue("held")(conn.default_channel)
        assert queue.queue_declare(passive=True).message_count == waiting
