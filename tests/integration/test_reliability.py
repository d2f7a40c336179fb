"""The life of a job against the real RabbitMQ, PostgreSQL and worker processes: retries with
backoff, dead letters, crashes, poison messages, cancellation and re-drive."""
import os
import signal
from itertools import pairwise

import pytest
from django.core.management import call_command
from django.db import transaction

from apps.jobs import services
from apps.jobs.lifecycle import Dispatch
from apps.jobs.models import Job, JobAttempt
from apps.jobs.publishing import JobPublisher
from tests.processes import dead_letter_ids, wait_until

pytestmark = pytest.mark.integration


def submit(kind: str, **params) -> Job:
    with transaction.atomic():
        job, _ = services.job_submit(kind=kind, params=params, submitted_by=None)
    return job


def wait_for_status(job: Job, *statuses: str, timeout: float = 30) -> Job:
    def reached():
        job.refresh_from_db()
        return job.status in statuses

    wait_until(reached, timeout=timeout, what=f"job {job.kind} to be {' or '.join(statuses)} (is {job.status})")
    return job


def test_flaky_job_succeeds_on_attempt_3_with_gaps_inside_the_backoff_bounds(worker):
    job = submit("diagnostics.flaky", failures=2)
    wait_for_status(job, Job.Status.SUCCEEDED)
    attempts = list(job.attempt_set.order_by("number"))
    assert job.attempts == 3
    assert [a.outcome for a in attempts] == ["retrying", "retrying", "succeeded"]
    for retries, (failed, next_attempt) in enumerate(pairwise(attempts)):
        ceiling = min(600.0, 1.0 * 2**retries)  # the kind's base 1 s, doubling, cap 600 s
        assert 0 <= failed.retry_delay <= ceiling
        gap = (next_attempt.started_at - failed.finished_at).total_seconds()
        # RabbitMQ holds the message for the whole delay; delivery adds a little on top.
        assert failed.retry_delay - 0.05 <= gap <= failed.retry_delay + 2.0, (retries, failed.retry_delay, gap)
    assert attempts[-1].result == {"attempt": 3}


def test_always_transient_job_fails_after_max_retries_and_is_dead_lettered(worker):
    job = submit("tests.transient")
    wait_for_status(job, Job.Status.FAILED)
    assert job.attempts == 3  # the first run and max_retries=2 retries
    assert job.error.startswith("Gave up after 3 attempts. Last error: TransientJobError")
    assert wait_until(lambda: str(job.id) in dead_letter_ids(), timeout=10, what="the dead letter")
    assert "TransientJobError: Still unavailable on attempt 3." in job.attempt_set.get(number=3).traceback


def test_permanent_error_fails_at_once_with_its_message_and_is_dead_lettered(worker):
    job = submit("diagnostics.fail", message="The invoice does not exist.")
    wait_for_status(job, Job.Status.FAILED)
    assert job.attempts == 1
    assert job.error == "PermanentJobError: The invoice does not exist."
    assert wait_until(lambda: str(job.id) in dead_letter_ids(), timeout=10, what="the dead letter")
    assert "PermanentJobError" in job.attempt_set.get().traceback


def test_redrive_moves_a_dead_letter_back_and_the_job_runs_again(worker):
    job = submit("tests.transient")
    wait_for_status(job, Job.Status.FAILED)
    wait_until(lambda: str(job.id) in dead_letter_ids(), timeout=10, what="the dead letter")

    call_command("redrive_dead_letters")

    assert str(job.id) not in dead_letter_ids()
    wait_until(lambda: Job.objects.get(id=job.id).attempts >= 4, timeout=20, what="a new attempt")
    assert JobAttempt.objects.filter(job=job, number=1, outcome="retrying").exists()  # history kept


def test_a_duplicate_message_of_a_finished_job_is_not_run_again(start_worker):
    start_worker(concurrency=1)  # one process: messages are taken strictly in order
    job = submit("diagnostics.noop")
    wait_for_status(job, Job.Status.SUCCEEDED)

    # e.g. the relay published its dispatch twice because a confirm was lost
    with JobPublisher() as publisher:
        assert publisher.publish([Dispatch(job.id, job.kind, job.queue, job.trace_id, job.generation, job.due_at)])
    later = submit("diagnostics.noop")
    wait_for_status(later, Job.Status.SUCCEEDED)

    job.refresh_from_db()
    assert job.attempts == 1
    assert job.attempt_set.get().result == {}


def test_a_worker_that_cannot_reach_postgresql_sends_the_job_back_to_run_later(start_worker):
    # It holds the message while it waits for PostgreSQL; stopped, it hands the message back at once.
    cut_off = start_worker(DATABASE_URL="postgres://postgres@127.0.0.1:1/unreachable", REMAP_SIGTERM="SIGQUIT",
                           CONVEYOR_WORKER_SOFT_SHUTDOWN_TIMEOUT="1")
    job = submit("diagnostics.noop")
    wait_until(lambda: "PostgreSQL is unreachable" in cut_off.output(), timeout=30, what="the worker to give up")
    cut_off.stop()

    start_worker()

    wait_for_status(job, Job.Status.SUCCEEDED, timeout=30)
    assert job.attempts == 1
    assert str(job.id) not in dead_letter_ids()


def test_worker_killed_with_sigkill_mid_job_leaves_the_message_and_the_job_completes(start_worker):
    first = start_worker()
    job = submit("diagnostics.sleep", seconds=3, steps=6)
    wait_until(lambda: Job.objects.get(id=job.id).progress > 0, timeout=30, what="the job to make progress")

    first.kill()
    start_worker()

    wait_for_status(job, Job.Status.SUCCEEDED, timeout=60)
    assert [a.outcome for a in job.attempt_set.order_by("number")] == ["lost", "succeeded"]


def test_sigterm_gives_a_running_job_the_soft_shutdown_timeout_then_requeues_it(start_worker):
    # As the Procfile and compose run workers: SIGTERM starts Celery's time-limited soft shutdown.
    first = start_worker(REMAP_SIGTERM="SIGQUIT", CONVEYOR_WORKER_SOFT_SHUTDOWN_TIMEOUT="2")
    job = submit("diagnostics.sleep", seconds=8, steps=16)
    wait_until(lambda: Job.objects.get(id=job.id).progress > 0, timeout=30, what="the job to make progress")

    os.kill(first.popen.pid, signal.SIGTERM)
    first.popen.wait(timeout=30)  # gone soon after the 2 s soft shutdown, not after the 8 s job
    assert "soft shutdown" in first.output().lower()
    start_worker()

    wait_for_status(job, Job.Status.SUCCEEDED, timeout=60)
    assert [a.outcome for a in job.attempt_set.order_by("number")] == ["lost", "succeeded"]


def test_poison_message_is_dead_lettered_after_the_delivery_limit_and_its_job_fails(start_worker, settings):
    # A process per job, so a job that kills its process kills only itself; the worker replaces it.
    start_worker(CONVEYOR_QUEUE_POOLS="default=prefork")
    job = submit("tests.crash")
    wait_for_status(job, Job.Status.FAILED, timeout=60)
    assert f"died {settings.CONVEYOR_DELIVERY_LIMIT} times" in job.error
    assert job.attempts == settings.CONVEYOR_DELIVERY_LIMIT + 1
    assert wait_until(lambda: str(job.id) in dead_letter_ids(), timeout=10, what="the dead letter")


def test_cancelling_a_running_interruptible_job_stops_it(worker):
    job = submit("diagnostics.sleep", seconds=20, steps=40)
    wait_until(lambda: Job.objects.get(id=job.id).progress > 0, timeout=30, what="the job to make progress")

    services.job_cancel(job=job)

    wait_until(
        lambda: JobAttempt.objects.filter(job=job, outcome="cancelled").exists(), timeout=10,
        what="the attempt to stop",
    )
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and job.progress < 100


def test_a_cancelled_queued_job_never_runs(start_worker):
    job = submit("diagnostics.noop")
    wait_until(lambda: Job.objects.get(id=job.id).published_at, timeout=10, what="the relay to publish the job")
    services.job_cancel(job=job)  # its message waits in the queue: no worker yet
    start_worker()
    other = submit("diagnostics.noop")  # runs after the cancelled one: the queue is first in, first out
    wait_for_status(other, Job.Status.SUCCEEDED)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED and job.attempts == 0
