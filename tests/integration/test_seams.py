"""The seams where a job used to be lost or run twice, each tried for real against RabbitMQ, PostgreSQL and worker
and relay processes: an operator's cancel and retry while the first message waits, a retry whose publish fails,
PostgreSQL stopped as a worker starts or ends an attempt, a message purged from its queue."""
import socket
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from apps.jobs import lifecycle, services
from apps.jobs.models import Job, JobAttempt
from apps.jobs.publishing import JobPublisher
from apps.jobs.reconciler import reconcile
from apps.jobs.relay import outbox_relay
from apps.jobs.tallies import tallies_read
from config import broker
from config.celery import app as celery_app
from tests.processes import dead_letter_ids, postgresql_stopped, relay_start, wait_until

pytestmark = pytest.mark.integration


def submit(kind: str, **params) -> Job:
    with transaction.atomic():
        job, _ = services.job_submit(kind=kind, params=params, submitted_by=None)
    return job


def published(job: Job) -> bool:
    return Job.objects.filter(id=job.id, published_at__isnull=False).exists()


def status_is(job: Job, status: str) -> bool:
    return Job.objects.filter(id=job.id, status=status).exists()


def test_a_job_cancelled_then_retried_while_its_first_message_waits_runs_once(start_worker):
    # given both processes of a worker busy, and a job X whose message waits behind them
    worker = start_worker(concurrency=2)
    busy = [submit("diagnostics.sleep", seconds=3, steps=3) for _ in range(2)]
    wait_until(lambda: all(status_is(job, "running") for job in busy), timeout=30, what="both processes busy")
    job = submit("diagnostics.sleep", seconds=2, steps=4)
    wait_until(lambda: published(job), timeout=10, what="X's first message")
    # when an operator cancels X and retries it: a second message is published
    services.job_cancel(job=job)
    services.job_retry(job=job)
    wait_until(lambda: published(job), timeout=10, what="X's second message")
    # then X runs once, from its second message; the first is dropped, saying why
    wait_until(lambda: status_is(job, "succeeded"), timeout=60, what="X to succeed")
    assert list(JobAttempt.objects.filter(job=job).values_list("outcome", flat=True)) == ["succeeded"]
    assert f"Job {job.id}: message of dispatch 1 dropped: an earlier dispatch" in worker.output()


def test_a_retry_whose_publish_fails_stays_in_the_outbox_and_runs_later(start_worker, relay):
    # given a job whose first attempt failed and whose retry waits 3 s in the outbox, and no relay running
    worker = start_worker()
    job = submit("tests.retry_once", wait=3)
    wait_until(lambda: status_is(job, "retrying"), timeout=30, what="the job to wait for its retry")
    relay.stop()
    assert Job.objects.get(id=job.id).published_at is None  # the retry's message is not published yet
    wait_until(lambda: Job.objects.get(id=job.id).due_at <= timezone.now(), timeout=10, what="the retry to fall due")
    # when a relay pass publishes it over a connection that breaks under the publisher
    with JobPublisher() as publisher:
        publisher._producer_get()  # its connection, open
        publisher._connection.connection.transport.sock.shutdown(socket.SHUT_RDWR)
        done = outbox_relay(publisher=publisher)
    # then nothing was confirmed, and the job still waits in the outbox, not stranded
    assert (done.found, done.published) == (1, 0)
    assert Job.objects.get(id=job.id).published_at is None
    # and once a relay runs again, the retry is published and the job succeeds on attempt 2
    again = relay_start()
    try:
        wait_until(lambda: status_is(job, "succeeded"), timeout=30, what="the retry to succeed")
    finally:
        again.stop()
    assert Job.objects.get(id=job.id).attempts == 2
    assert worker.popen.poll() is None


def test_postgresql_stopped_while_an_attempt_ends_costs_nothing(start_worker, tmp_path):
    # given an attempt under way
    worker = start_worker()
    gate = tmp_path / "gate"
    job = submit("tests.gate", path=str(gate))
    wait_until(lambda: gate.with_suffix(".started").exists(), timeout=30, what="the attempt to start")
    # when PostgreSQL stops just as the attempt ends, and comes back a little later
    with postgresql_stopped():
        gate.touch()
        wait_until(lambda: "PostgreSQL is unreachable" in worker.output(), timeout=30,
                   what="the worker to meet the outage")
    # then the worker stored the outcome once PostgreSQL was back: one attempt, no dead letter
    wait_until(lambda: status_is(job, "succeeded"), timeout=60, what="the job to succeed")
    attempt = JobAttempt.objects.get(job=job)
    assert attempt.result == {"gate": "opened", "attempt": 1}
    assert str(job.id) not in dead_letter_ids()


def test_postgresql_stopped_when_a_worker_starts_a_job_costs_nothing(start_worker):
    # given a job whose message waits in the queue, and no worker yet
    job = submit("diagnostics.noop")
    wait_until(lambda: published(job), timeout=10, what="the job's message")
    # when PostgreSQL stops and a worker takes the message, then PostgreSQL comes back
    with postgresql_stopped():
        worker = start_worker()
        wait_until(lambda: f"starting job {job.id} waits for it" in worker.output(), timeout=30,
                   what="the worker to meet the outage")
    # then the job runs once, and its message was never dead-lettered
    wait_until(lambda: status_is(job, "succeeded"), timeout=60, what="the job to succeed")
    assert Job.objects.get(id=job.id).attempts == 1
    assert str(job.id) not in dead_letter_ids()


def test_a_job_whose_message_was_purged_is_found_by_the_reconciler_and_succeeds(start_worker, relay):
    # given a relay whose lifeline looks every second, and a job published to a queue nobody consumes yet
    relay.stop()
    lifeline = relay_start(CONVEYOR_RECONCILE_INTERVAL_SECONDS="1", CONVEYOR_RECONCILE_AFTER_SECONDS="1")
    try:
        job = submit("diagnostics.noop")
        wait_until(lambda: published(job), timeout=10, what="the job's message")
        # when its message is purged from the queue
        with celery_app.connection_for_write() as connection:
            assert broker.job_queue("default")(connection.default_channel).purge() == 1
        start_worker()
        # then the reconciler dispatches it again, and it succeeds
        wait_until(lambda: status_is(job, "succeeded"), timeout=60, what="the reconciled job to succeed")
    finally:
        lifeline.stop()
    job.refresh_from_db()
    assert job.generation == 2 and job.attempts == 1
    assert tallies_read()[("", "reconciled")] == 1
    assert "job(s) waiting in queue default whose messages are missing" in lifeline.output()


def test_a_running_job_whose_worker_and_message_are_gone_is_dispatched_again(transactional_db):
    # given a job marked running long past its hard time limit, with no live attempt (nobody holds its lock)
    job = submit("diagnostics.noop")
    [dispatch] = lifecycle.dispatch_claim(kinds=["diagnostics.noop"], limit=1)
    start = lifecycle.attempt_start(job_id=str(job.id), generation=dispatch.generation, worker="gone@host")
    lifecycle.attempt_release(job_id=str(job.id))
    Job.objects.filter(id=job.id).update(started_at=timezone.now() - timedelta(hours=1))
    # when the reconciler looks
    assert reconcile() == 1
    # then the job is back in the outbox, for a new dispatch
    job.refresh_from_db()
    assert (job.status, job.published_at, start.job.attempts) == ("queued", None, 1)
