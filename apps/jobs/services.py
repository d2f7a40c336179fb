"""Writes to jobs: submit, operator actions, re-drive, and the worker's state changes."""
import json
import logging
import math
import random
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.utils import timezone
from django.utils.datastructures import MultiValueDict
from django_celery_results.models import TaskResult

from apps.jobs.errors import ActionNotAllowed, IdempotencyKeyReused, JobCancelled, JobParamsInvalid
from apps.jobs.models import ApiToken, Job, JobAttempt
from apps.jobs.publishing import JobMessage, JobPublisher
from apps.jobs.registry import JobKind, RetryPolicy, kind_get
from apps.jobs.results import task_result_upsert
from apps.jobs.rows import row_insert_sql
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
    """Record a job in the caller's transaction; the outbox relay publishes it once that commits.

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
    # its own the INSERT commits by itself: one round trip to PostgreSQL instead of two. A plain
    # INSERT (what save() would send), as this is every submission's one write.
    savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with savepoint, connection.cursor() as cursor:
            cursor.execute(*row_insert_sql(job))
        job._state.adding, job._state.db = False, connection.alias
    except IntegrityError:
        # Another request with the same key won the race; answer with its job.
        existing = _job_for_idempotency_key(submitted_by=submitted_by, key=idempotency_key, kind=kind, params=cleaned)
        if existing is None:
            raise
        return existing, False
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
    """Publish the job's message now and wait for RabbitMQ's confirm; False when it was not confirmed.

    For a job whose message was lost while it is marked running (re-drive). New and retried jobs
    are published by the outbox relay.
    """
    with JobPublisher() as publisher:
        return bool(publisher.publish([JobMessage(job.id, job.kind, job.queue, job.trace_id)]))


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
    """Run a failed or cancelled job again as a new attempt; its earlier attempts stay in history.

    Back in the outbox (queued, unpublished), it is published by the relay once this commits.
    """
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
    with connection.cursor() as cursor:
        cursor.execute(
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
        )
        row = cursor.fetchone()
        return None if row is None else _job_from_row([column.name for column in cursor.description], row)


def _job_from_row(columns: list[str], row: tuple) -> Job:
    """A Job from a row of its table read by plain SQL, its values converted as the ORM converts them."""
    values = dict(zip(columns, row, strict=True))
    fields = Job._meta.concrete_fields
    db = connections[DEFAULT_DB_ALIAS]  # the proxy `connection` would look it up again per field
    loaded = []
    for field in fields:
        value = values[field.column]
        for convert in [*db.ops.get_db_converters(field), *field.get_db_converters(db)]:
            value = convert(value, field, db)
        loaded.append(value)
    return Job.from_db(db.alias, [field.attname for field in fields], loaded)


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


def job_succeed(*, job: Job, task_result: TaskResult) -> None:
    """The job succeeded (unless cancelled while it ran), so did its attempt; `task_result` is its result."""
    _attempt_end_with_result(
        job=job, changes={"status": Status.SUCCEEDED, "progress": 100, "finished_at": timezone.now(), "error": ""},
        outcome=JobAttempt.Outcome.SUCCEEDED, task_result=task_result,
    )


def job_retry_later(*, job: Job, error: str, delay: float, task_result: TaskResult) -> None:
    """The attempt failed for now: the job waits `delay` seconds for its next one. Call it before the
    next attempt's message is published, so this attempt's RETRY row never lands after that one's."""
    _attempt_end_with_result(
        job=job, changes={"status": Status.RETRYING, "error": error,
                          "next_retry_at": timezone.now() + timedelta(seconds=delay)},
        outcome=JobAttempt.Outcome.RETRYING, error=error, retry_delay=delay, task_result=task_result,
    )


def _attempt_end_with_result(*, job: Job, changes: dict, outcome: str, task_result: TaskResult, error: str = "",
                             retry_delay: float | None = None) -> None:
    """One statement, committed synchronously so it is on disk before the message is acknowledged:
    `changes` to the job (unless it is no longer running: cancelled meanwhile), the end of its
    attempt, and its TaskResult row (the result value or error the pages read)."""
    job_table, attempt_table = Job._meta.db_table, JobAttempt._meta.db_table
    insert_result, result_params = task_result_upsert(task_result)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
                WITH job AS (
                    UPDATE {job_table} SET {", ".join(f"{column} = %s" for column in changes)}
                    WHERE id = %s AND status = %s
                ), attempt AS (
                    UPDATE {attempt_table} SET outcome = %s, finished_at = %s, error = %s, retry_delay = %s
                    WHERE job_id = %s AND number = %s
                )
                {insert_result}
            """,
            [*changes.values(), job.id, Status.RUNNING,
             outcome, timezone.now(), error, retry_delay, job.id, job.attempts, *result_params],
        )


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
