"""The outbox relay against the real PostgreSQL and RabbitMQ: woken by a commit, once per job, confirms
counted per message."""
import time

import pytest
from django.db import transaction

from apps.jobs import lifecycle, services
from apps.jobs.lifecycle import Dispatch
from apps.jobs.models import Job
from apps.jobs.publishing import JobPublisher
from apps.jobs.relay import outbox_relay
from config import broker
from config.celery import app as celery_app
from tests.processes import queues_reset, relay_start, wait_until

pytestmark = pytest.mark.integration


def queued_job_ids(name: str) -> list[str]:
    """The job ids of the messages in job queue `name`, taken out of it."""
    ids = []
    with celery_app.connection_for_write() as conn:
        queue = broker.job_queue(name)(conn.default_channel)
        while (message := queue.get(no_ack=True)) is not None:
            ids.append(message.headers["id"])
    return ids


def submit(count: int = 1) -> list[Job]:
    with transaction.atomic():
        return [services.job_submit(kind="diagnostics.noop", params={}, submitted_by=None)[0] for _ in range(count)]


@pytest.fixture
def quiet_relay(transactional_db):
    """A relay whose own passes are a minute apart: only a notification from PostgreSQL wakes it sooner."""
    queues_reset("default", "held")
    process = relay_start(CONVEYOR_RELAY_INTERVAL_SECONDS="60")
    yield process
    process.stop()


def test_a_committed_job_is_published_at_once_and_a_rolled_back_one_never(quiet_relay):
    # given a relay that would otherwise wait a minute; when one submission commits and one rolls back
    with pytest.raises(RuntimeError), transaction.atomic():
        rolled_back, _ = services.job_submit(kind="diagnostics.noop", params={}, submitted_by=None)
        raise RuntimeError("the caller's transaction fails")
    began = time.monotonic()
    [job] = submit()
    # then the committed job is published within moments, by the notification of its commit: the relay's
    # own pass would come a minute later
    wait_until(lambda: Job.objects.get(id=job.id).published_at, timeout=60, interval=0.05, what="the publish")
    assert time.monotonic() - began < 2
    assert queued_job_ids("default") == [str(job.id)]
    assert not Job.objects.filter(id=rolled_back.id).exists()


def test_two_relays_publish_each_job_exactly_once(transactional_db):
    # given two relays over one database (two hosts, say)
    queues_reset("default")
    relays = [relay_start(), relay_start()]
    try:
        # when jobs are submitted, each commit waking both
        jobs = [job for _ in range(10) for job in submit(20)]
        wait_until(lambda: not Job.objects.filter(published_at__isnull=True).exists(), timeout=30,
                   what="every job to be published")
    finally:
        for relay in relays:
            relay.stop()
    # then the queue holds one message per job
    published = queued_job_ids("default")
    assert sorted(published) == sorted(str(job.id) for job in jobs)


def test_a_batch_is_confirmed_message_by_message_and_a_full_queue_refuses_its_share(transactional_db, settings):
    # given an empty default queue, and the held queue filled one message at a time until it refuses one
    queues_reset("default", "held")
    capacity = settings.CONVEYOR_QUEUE_MAX_LENGTHS["held"]

    def messages(queue: str, count: int) -> list[Dispatch]:
        jobs = [Job.objects.create(kind="diagnostics.noop", queue=queue) for _ in range(count)]
        return [Dispatch(job.id, job.kind, job.queue, job.trace_id, 1, job.due_at) for job in jobs]

    with JobPublisher() as publisher:
        filled = [len(publisher.publish([message])) for message in messages("held", capacity + 2)]
        # when one batch goes to both queues, sent whole before its confirms are awaited
        default, held = messages("default", 300), messages("held", 5)
        confirmed = publisher.publish(default[:150] + held + default[150:])
    # then every message the default queue took is confirmed, and none of those the full queue refused
    # (a quorum queue checks its limit just before it takes a message, so it held one over)
    assert filled == [1] * (capacity + 1) + [0]
    assert sorted(d.job_id for d in confirmed) == sorted(message.job_id for message in default)
    assert len(queued_job_ids("held")) == capacity + 1
    assert sorted(queued_job_ids("default")) == sorted(str(message.job_id) for message in default)


def test_a_pass_leaves_jobs_of_a_kind_this_process_does_not_know_in_the_outbox(transactional_db):
    # given a job of a kind whose code this process does not have (deployed on the web first)
    queues_reset("default")
    unknown = Job(kind="billing.not_deployed_here", queue="default")
    known = Job(kind="diagnostics.noop", queue="default")
    for job in (unknown, known):
        lifecycle.job_record(job=job)
    # when a pass runs
    with JobPublisher() as publisher:
        done = outbox_relay(publisher=publisher)
    # then it publishes what it knows and leaves the rest waiting, for a relay that knows the kind
    assert (done.found, done.published) == (1, 1)
    assert queued_job_ids("default") == [str(known.id)]
    assert Job.objects.get(id=unknown.id).published_at is None
