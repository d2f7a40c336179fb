"""Writes to jobs: submit, publish, relay the outbox, operator actions, and the worker's state changes."""
import json
import logging
import math
import random
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from apps.jobs.errors import ActionNotAllowed, IdempotencyKeyReused, JobCancelled, JobParamsInvalid
from apps.jobs.models import ApiToken, Job, JobAttempt
from apps.jobs.registry import JobKind, RetryPolicy, kind_get
from apps.ops.log import trace_id_var
from config import broker
from config.celery import app as celery_app

logger = logging.getLogger(__name__)

Status = Job.Status


def job_params_clean(
    *, kind: JobKind, params: dict, files: MultiValueDict | None = None, user: AbstractBaseUser | None = None
) -> dict:
    """Validate params with the kind's form; the JSON-safe cleaned data, or JobParamsInvalid."""
    form = kind.form_build(user=user, data=params, files=files)
    if not form.is_valid():
        raise JobParamsInvalid(form)
    if kind.params_from_form is not None:
        cleaned = kind.params_from_form(form)
    else:
        cleaned = {name: value for name, value in form.cleaned_data.items() if not isinstance(value, UploadedFile)}
    # The params travel as JSON; a value JSON cannot carry would fail later, in the worker.
    return json.loads(json.dumps(cleaned, cls=DjangoJSONEncoder))


def job_submit(
    *,
    kind: str,
    params: dict,
    submitted_by: AbstractBaseUser | None,
    idempotency_key: str | None = None,
    trace_id: str = "",
    files: MultiValueDict | None = None,
) -> tuple[Job, bool]:
    """Record a job in the caller's transaction and publish it after commit.

    Without a `trace_id` the job takes the current one: the web request's id, or in a worker the
    trace id of the job that submits it. Returns (job, created); created is False when the
    idempotency key names an earlier job.
    """
    job_kind = kind_get(kind)
    cleaned = job_params_clean(kind=job_kind, params=params, files=files, user=submitted_by)
    if idempotency_key and submitted_by is not None:
        existing = _job_for_idempotency_key(submitted_by=submitted_by, key=idempotency_key, kind=kind, params=cleaned)
        if existing is not None:
            return existing, False
    job = Job(
        id=uuid.uuid4(),
        kind=kind,
        params=cleaned,
        queue=job_kind.queue,
        idempotency_key=idempotency_key or None,
        trace_id=trace_id or trace_id_var.get(),
        submitted_by=submitted_by if submitted_by is not None and submitted_by.is_authenticated else None,
    )
    # Inside a caller's transaction a savepoint keeps a lost idempotency race from breaking it; on
    # its own the INSERT commits by itself: one round trip to PostgreSQL instead of two.
    savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with savepoint:
            job.save(force_insert=True)
    except IntegrityError:
        # Another request with the same key won the race; answer with its job.
        existing = _job_for_idempotency_key(submitted_by=submitted_by, key=idempotency_key, kind=kind, params=cleaned)
        if existing is None:
            raise
        return existing, False
    transaction.on_commit(lambda: job_publish(job=job))
    return job, True


def _job_for_idempotency_key(*, submitted_by: AbstractBaseUser, key: str, kind: str, params: dict) -> Job | None:
    job = Job.objects.filter(submitted_by=submitted_by, idempotency_key=key).first()
    if job is not None and (job.kind != kind or job.params != params):
        raise IdempotencyKeyReused(
            f"Idempotency key {key!r} was already used for a different job ({job.kind}, {job.id}). "
            "Use a new key for a new job."
        )
    return job


def job_publish(*, job: Job) -> bool:
    """Hand the job's message to RabbitMQ and wait for its confirm; False leaves it to the outbox relay."""
    kind = kind_get(job.kind)
    try:
        kind.task.apply_async(
            kwargs={"job_id": str(job.id)},
            task_id=str(job.id),
            queue=broker.job_queue(job.queue),
            headers={"trace_id": job.trace_id},
            soft_time_limit=kind.soft_time_limit,
            time_limit=kind.time_limit,
            # One immediate retry on a fresh connection: a pooled connection is dead after a
            # broker restart. Never more: a request must not wait for a broker that is down; the
            # relay publishes later. (A retried publish may duplicate; the worker drops duplicates.)
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0},
        )
    except Exception as exc:  # broker down, connection lost, or the queue is full (publish nacked)
        logger.warning("job %s not published yet, the outbox relay will: %s: %s", job.id, type(exc).__name__, exc)
        return False
    # Not worth a wait for the disk: if a crash loses this mark, the relay publishes the job
    # again and the worker drops the duplicate.
    with transaction_flushed_by_next_commit():
        Job.objects.filter(id=job.id, published_at__isnull=True).update(published_at=timezone.now())
    return True


def outbox_relay(*, batch_size: int | None = None) -> int:
    """Publish jobs that were recorded but never confirmed by RabbitMQ; the number published.

    Stops at the first refusal: the broker is down or the queue is full, and the rest can wait.
    """
    batch_size = batch_size or settings.CONVEYOR_RELAY_BATCH_SIZE
    # Jobs younger than the grace period are still being published by the request that made them.
    due = timezone.now() - timedelta(seconds=settings.CONVEYOR_RELAY_GRACE_SECONDS)
    pending = Job.objects.filter(status=Status.QUEUED, published_at__isnull=True, created_at__lt=due)
    published = 0
    for job in pending.order_by("created_at")[:batch_size]:
        if not job_publish(job=job):
            break
        published += 1
    return published


def backoff_delay(*, policy: RetryPolicy, retries: int, retry_after: float | None = None) -> int:
    """Full jitter: whole seconds, uniform in [0, min(cap, base * 2**retries)].

    A `retry_after` longer than that wins, up to the cap. Whole seconds because RabbitMQ's
    native delayed delivery counts in seconds.
    """
    ceiling = min(policy.backoff_cap, policy.backoff_base * (2**retries))
    delay = random.randint(0, int(ceiling))
    if retry_after is not None and retry_after > delay:
        delay = int(min(policy.backoff_cap, math.ceil(retry_after)))
    return delay


# --- Operator actions (web) --------------------------------------------------


def job_retry(*, job: Job) -> Job:
    """Run a failed or cancelled job again as a new attempt; its earlier attempts stay in history."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(id=job.id)
        if job.status not in (Status.FAILED, Status.CANCELLED):
            raise ActionNotAllowed(f"Only failed or cancelled jobs can be retried; this job is {job.status}.")
        Job.objects.filter(id=job.id).update(
            status=Status.QUEUED,
            published_at=None,
            progress=0,
            progress_message="",
            error="",
            next_retry_at=None,
            finished_at=None,
        )
        job.refresh_from_db()
        transaction.on_commit(lambda: job_publish(job=job))
    return job


def job_cancel(*, job: Job) -> Job:
    """Cancel a queued job (it never runs) or a running job of an interruptible kind."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(id=job.id)
        cancellable = {Status.QUEUED, Status.RETRYING}
        if kind_get(job.kind).interruptible:
            cancellable.add(Status.RUNNING)
        if job.status not in cancellable:
            if job.status == Status.RUNNING:
                raise ActionNotAllowed(f"Jobs of kind {job.kind} cannot be interrupted once running.")
            raise ActionNotAllowed(f"Only queued, retrying or running jobs can be cancelled; this job is {job.status}.")
        Job.objects.filter(id=job.id).update(status=Status.CANCELLED, finished_at=timezone.now(), next_retry_at=None)
        job.refresh_from_db()
    return job


def dead_letters_redrive(*, limit: int = 1000) -> int:
    """Move up to `limit` messages out of the dead queue and run their jobs again; how many.

    A failed or cancelled job runs again as a new attempt. A job still marked running lost its
    message to RabbitMQ's own delivery limit: that message is published again. A dead letter
    whose job is gone, succeeded, or already has a newer message (queued, retrying) is dropped:
    running it would run the job twice.
    """
    redriven = 0
    with celery_app.connection_for_write() as connection:
        queue = broker.dead_queue()(connection.default_channel)
        queue.declare()
        for _ in range(limit):
            message = queue.get(no_ack=False)
            if message is None:
                break
            job = Job.objects.filter(id=message.headers.get("id")).first()
            if job is not None and job.status in (Status.FAILED, Status.CANCELLED):
                job_retry(job=job)
                redriven += 1
            elif job is not None and job.status == Status.RUNNING:
                if not job_publish(job=job):
                    message.requeue()
                    break
                redriven += 1
            message.ack()
    return redriven


# --- The worker's writes -----------------------------------------------------


@contextmanager
def transaction_flushed_by_next_commit() -> Iterator[None]:
    """A transaction whose COMMIT does not wait for the disk (synchronous_commit off).

    For the state changes of a running job only. PostgreSQL writes one WAL in order, so the
    synchronous commit that stores the attempt's outcome (Celery's result write, made before the
    message is acknowledged) makes everything committed before it durable too. A crash before
    then loses only a "running" or progress mark, and the unacknowledged message runs again.
    https://www.postgresql.org/docs/15/wal-async-commit.html
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


def statement_flushed_by_next_commit(sql: str) -> str:
    """`sql` run as a transaction of its own whose COMMIT does not wait for the disk.

    The one-round-trip form of transaction_flushed_by_next_commit, for the writes every job makes:
    PostgreSQL runs the statements of one query string as one transaction, SET LOCAL included.
    Needs autocommit (outside transaction.atomic), where Django runs a worker's writes.
    """
    if connection.in_atomic_block:
        raise RuntimeError("statement_flushed_by_next_commit would change the caller's transaction.")
    return f"SET LOCAL synchronous_commit TO OFF; {sql}"


def job_start(*, job_id: str, worker: str) -> Job | None:
    """Mark the job running as a new attempt; None when it must not run (finished or cancelled).

    One statement: the job's row, the attempt the message's last delivery left running (its worker
    died) and the new attempt, written together.
    """
    job_table, attempt_table = Job._meta.db_table, JobAttempt._meta.db_table
    started = list(Job.objects.raw(
        statement_flushed_by_next_commit(f"""
            WITH started AS (
                UPDATE {job_table}
                SET attempts = attempts + 1, status = %(running)s, started_at = %(now)s, next_retry_at = NULL
                WHERE id = %(id)s AND NOT status = ANY(%(finished)s)
                RETURNING *
            ), lost AS (
                UPDATE {attempt_table} SET outcome = %(lost)s, finished_at = %(now)s, error = %(lost_error)s
                FROM started
                WHERE job_id = started.id AND number = started.attempts - 1 AND outcome = %(running)s
            ), attempt AS (
                INSERT INTO {attempt_table} (job_id, number, worker, started_at, outcome, error, log)
                SELECT id, attempts, %(worker)s, %(now)s, %(running)s, '', '[]' FROM started
            )
            SELECT * FROM started
        """),
        {
            "id": job_id, "now": timezone.now(), "worker": worker, "running": Status.RUNNING,
            "finished": list(Job.FINISHED), "lost": JobAttempt.Outcome.LOST,
            "lost_error": "The worker running this attempt died.",
        },
    ))
    return started[0] if started else None


def job_progress_report(*, job: Job, percent: int, message: str = "") -> None:
    """Record progress; raise JobCancelled if an operator cancelled the job meanwhile."""
    with transaction_flushed_by_next_commit():
        updated = Job.objects.filter(id=job.id, status=Status.RUNNING).update(
            progress=max(0, min(100, int(percent))), progress_message=message[:200]
        )
    if not updated:
        raise JobCancelled(f"Job {job.id} was cancelled while it ran.")


def _attempt_finish(*, job: Job, outcome: str, error: str = "", retry_delay: float | None = None) -> None:
    JobAttempt.objects.filter(job_id=job.id, number=job.attempts).update(
        outcome=outcome, finished_at=timezone.now(), error=error, retry_delay=retry_delay
    )


def job_succeed(*, job: Job) -> None:
    """One statement: the job succeeded (unless cancelled while it ran), and so did its attempt."""
    job_table, attempt_table = Job._meta.db_table, JobAttempt._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            statement_flushed_by_next_commit(f"""
                WITH succeeded AS (
                    UPDATE {job_table} SET status = %(succeeded)s, progress = 100, finished_at = %(now)s, error = ''
                    WHERE id = %(id)s AND status = %(running)s
                )
                UPDATE {attempt_table} SET outcome = %(succeeded)s, finished_at = %(now)s, error = ''
                WHERE job_id = %(id)s AND number = %(number)s
            """),
            {"id": job.id, "number": job.attempts, "now": timezone.now(), "succeeded": Status.SUCCEEDED,
             "running": Status.RUNNING},
        )


def job_retry_later(*, job: Job, error: str, delay: float) -> None:
    now = timezone.now()
    with transaction_flushed_by_next_commit():
        Job.objects.filter(id=job.id, status=Status.RUNNING).update(
            status=Status.RETRYING, error=error, next_retry_at=now + timedelta(seconds=delay)
        )
        _attempt_finish(job=job, outcome=JobAttempt.Outcome.RETRYING, error=error, retry_delay=delay)


def job_fail(*, job: Job, error: str) -> None:
    with transaction_flushed_by_next_commit():
        Job.objects.filter(id=job.id).exclude(status__in=Job.FINISHED).update(
            status=Status.FAILED, error=error, finished_at=timezone.now(), next_retry_at=None
        )
        _attempt_finish(job=job, outcome=JobAttempt.Outcome.FAILED, error=error)


def job_cancelled_while_running(*, job: Job) -> None:
    with transaction_flushed_by_next_commit():
        _attempt_finish(job=job, outcome=JobAttempt.Outcome.CANCELLED, error="Cancelled by an operator.")


def job_attempt_log_save(*, job: Job, lines: list[dict]) -> None:
    """Store what the job logged during its current attempt, in one statement when the attempt ends."""
    with transaction_flushed_by_next_commit():
        JobAttempt.objects.filter(job_id=job.id, number=job.attempts).update(log=lines)



# --- API tokens --------------------------------------------------------------


def api_token_create(*, username: str) -> tuple[str, bool]:
    """A new bearer token for `username` (the user is created when missing); (token, user_created)."""
    user, user_created = get_user_model().objects.get_or_create(username=username)
    token = secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, key_hash=ApiToken.hash_of(token))
    return token, user_created
