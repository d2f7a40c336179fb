"""The lifecycle's statements against the real PostgreSQL: the fence at each start, each end in one statement,
dispatches and their generations, retention."""
import uuid
from datetime import timedelta

import psycopg2
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.jobs import lifecycle
from apps.jobs.lifecycle import Verdict
from apps.jobs.models import Job, JobAttempt

pytestmark = pytest.mark.django_db(transaction=True)


def queued(**fields) -> Job:
    job = Job(kind="diagnostics.noop", queue="default", params={"n": 1}, **fields)
    lifecycle.job_record(job=job)
    return job


def dispatched(job: Job) -> int:
    """Claim the job as the relay does; the generation its message carries."""
    [dispatch] = [d for d in lifecycle.dispatch_claim(kinds=[job.kind], limit=100) if d.job_id == job.id]
    lifecycle.dispatch_confirm(dispatches=[dispatch])
    return dispatch.generation


@pytest.fixture
def other_worker():
    """A second PostgreSQL session, as another worker's would be."""
    settings = connection.settings_dict
    session = psycopg2.connect(dbname=settings["NAME"], user=settings["USER"], host=settings["HOST"] or "127.0.0.1",
                               port=settings["PORT"] or 5432)
    session.autocommit = True
    yield session
    session.close()


def lock_taken_by(session, job: Job) -> None:
    with session.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [lifecycle.lock_key(job.id)])


def test_a_start_and_a_success_are_one_statement_each_and_the_result_is_the_attempts():
    # given a job the relay dispatched
    job = queued()
    generation = dispatched(job)
    # when a worker starts it, then it succeeds
    with CaptureQueriesContext(connection) as starting:
        start = lifecycle.attempt_start(job_id=str(job.id), generation=generation, worker="w@host")
    with CaptureQueriesContext(connection) as ending:
        moved = lifecycle.attempt_succeed(job=start.job, result_json='{"rows": 3}', log=[])
    # then each was one statement, and the attempt holds the result the pages read
    assert len(starting) == 1 and len(ending) == 1
    assert start.verdict is Verdict.STARTED and (start.job.status, start.job.attempts, start.job.params) == (
        "running", 1, {"n": 1})
    assert moved
    job.refresh_from_db()
    assert (job.status, job.progress) == ("succeeded", 100) and job.finished_at is not None
    assert JobAttempt.objects.get(job=job).result == {"rows": 3}
    assert job.id not in lifecycle.jobs_alive(job_ids=[job.id])  # the lock went with the end


def test_a_message_of_an_earlier_dispatch_is_refused_and_takes_nothing():
    # given a job cancelled and retried while its first message waited: two messages exist
    job = queued()
    first = dispatched(job)
    lifecycle.job_cancel(job=job, kind=None)
    lifecycle.job_retry(job=job)
    second = dispatched(job)
    # when the first one arrives, then it is refused; the second one runs
    assert lifecycle.attempt_start(job_id=str(job.id), generation=first, worker="w").verdict is Verdict.STALE
    assert job.id not in lifecycle.jobs_alive(job_ids=[job.id])
    assert lifecycle.attempt_start(job_id=str(job.id), generation=second, worker="w").verdict is Verdict.STARTED


def test_a_duplicate_message_of_a_job_running_on_a_live_worker_is_refused(other_worker):
    # given a job running under another worker's lock (a duplicate publish of the same dispatch)
    job = queued()
    generation = dispatched(job)
    Job.objects.filter(id=job.id).update(status="running", attempts=1)
    lock_taken_by(other_worker, job)
    # when the duplicate arrives, then the fence refuses it and the job is untouched
    start = lifecycle.attempt_start(job_id=str(job.id), generation=generation, worker="w")
    assert start.verdict is Verdict.RUNNING_ELSEWHERE
    assert Job.objects.get(id=job.id).attempts == 1


def test_a_redelivery_after_the_worker_died_takes_over_and_records_the_attempt_lost(other_worker):
    # given a job whose worker started it, then died (its session, and so its lock, is gone)
    job = queued()
    generation = dispatched(job)
    lock_taken_by(other_worker, job)
    with other_worker.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock_all()")
    connection.close()  # this session starts the first attempt and then lets go, as a dying worker would
    first = lifecycle.attempt_start(job_id=str(job.id), generation=generation, worker="dead@host")
    lifecycle.attempt_release(job_id=str(job.id))
    # when the message is delivered again
    again = lifecycle.attempt_start(job_id=str(job.id), generation=generation, worker="alive@host")
    # then the new attempt runs and the old one is recorded as lost, one in a row
    assert first.verdict is Verdict.STARTED and again.verdict is Verdict.STARTED
    assert again.job.attempts == 2 and again.lost_in_a_row == 1
    assert list(JobAttempt.objects.filter(job=job).order_by("number").values_list("outcome", flat=True)) == [
        "lost", "running"]


def test_a_retry_of_a_cancelled_job_whose_attempt_still_runs_waits_for_it(other_worker):
    # given a running job cancelled by an operator while its attempt still runs, then retried
    job = queued()
    generation = dispatched(job)
    Job.objects.filter(id=job.id).update(status="running", attempts=1)
    lock_taken_by(other_worker, job)
    lifecycle.job_cancel(job=job, kind=type("Interruptible", (), {"interruptible": True})())
    lifecycle.job_retry(job=job)
    generation = dispatched(job)
    # when the new message arrives, then it does not run beside the old attempt: it is due again shortly
    start = lifecycle.attempt_start(job_id=str(job.id), generation=generation, worker="w")
    assert start.verdict is Verdict.BUSY
    lifecycle.dispatch_defer(job_id=str(job.id), generation=generation, seconds=2)
    job.refresh_from_db()
    assert job.published_at is None and job.due_at > timezone.now() + timedelta(seconds=1)


def test_a_claim_raises_the_generation_and_an_unconfirmed_one_stays_in_the_outbox():
    # given a job due now and one due in an hour
    now, later = queued(), queued(due_at=timezone.now() + timedelta(hours=1))
    # when the relay claims twice without a confirm between
    first = lifecycle.dispatch_claim(kinds=["diagnostics.noop"], limit=10)
    second = lifecycle.dispatch_claim(kinds=["diagnostics.noop"], limit=10)
    # then only the due job was claimed, each time with a new generation, and it is still unpublished
    assert [d.job_id for d in first] == [now.id] and [d.generation for d in first + second] == [1, 2]
    assert Job.objects.get(id=now.id).published_at is None
    # and a confirm of the superseded claim marks nothing; the current one does
    lifecycle.dispatch_confirm(dispatches=first)
    assert Job.objects.get(id=now.id).published_at is None
    lifecycle.dispatch_confirm(dispatches=second)
    assert Job.objects.get(id=now.id).published_at is not None
    assert abs((lifecycle.dispatch_next_due(kinds=["diagnostics.noop"]) - later.due_at).total_seconds()) < 0.001


def test_a_retry_later_puts_the_job_back_in_the_outbox_due_after_its_backoff():
    job = queued()
    start = lifecycle.attempt_start(job_id=str(job.id), generation=dispatched(job), worker="w")
    lifecycle.attempt_retry_later(job=start.job, error="TransientJobError: busy", traceback="Traceback ...",
                                  delay=30, log=[])
    job.refresh_from_db()
    assert (job.status, job.retries, job.published_at) == ("retrying", 1, None)
    assert timedelta(seconds=29) < job.due_at - timezone.now() <= timedelta(seconds=30)
    attempt = JobAttempt.objects.get(job=job)
    assert (attempt.outcome, attempt.retry_delay, attempt.traceback) == ("retrying", 30, "Traceback ...")


def test_a_confirm_that_comes_after_its_message_already_ran_and_asked_for_a_retry_leaves_the_retry_waiting():
    # given a claimed job whose message a worker took, ran and retried before the relay saw RabbitMQ's confirm
    # (the relay confirms a whole batch at once; the first message of a batch can be done by then)
    job = queued()
    [dispatch] = [d for d in lifecycle.dispatch_claim(kinds=[job.kind], limit=100) if d.job_id == job.id]
    start = lifecycle.attempt_start(job_id=str(job.id), generation=dispatch.generation, worker="w")
    lifecycle.attempt_retry_later(job=start.job, error="TransientJobError: busy", traceback="", delay=0, log=[])
    # when the relay's confirm for that dispatch arrives
    lifecycle.dispatch_confirm(dispatches=[dispatch])
    # then the retry still waits in the outbox for the relay, not marked published with no message behind it
    job.refresh_from_db()
    assert (job.status, job.published_at) == ("retrying", None)
    assert [d.job_id for d in lifecycle.dispatch_claim(kinds=[job.kind], limit=100)] == [job.id]


def test_an_attempt_that_was_taken_over_records_nothing_over_the_new_one():
    # given an attempt whose job was taken over meanwhile (another attempt is the job's now)
    job = queued()
    start = lifecycle.attempt_start(job_id=str(job.id), generation=dispatched(job), worker="w")
    Job.objects.filter(id=job.id).update(attempts=2)
    # when the old attempt ends, then the job keeps its state
    assert not lifecycle.attempt_fail(job=start.job, error="late", traceback="", log=[])
    assert Job.objects.get(id=job.id).status == "running"


def test_an_unknown_job_is_gone():
    assert lifecycle.attempt_start(job_id=str(uuid.uuid4()), generation=1, worker="w").verdict is Verdict.GONE
