"""Writes to jobs from the web and from operators: submit, retry, cancel, re-drive; API tokens.

Each state change is a transition of apps/jobs/lifecycle.py, which guards its precondition in the statement
that makes it; this module adds what a request brings (validation, idempotency, files).
"""
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.forms import Form
from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from apps.jobs import audit, lifecycle, limits, selectors
from apps.jobs.context import trace_id_var
from apps.jobs.database import database_retried
from apps.jobs.errors import ActionForbidden, IdempotencyKeyReused, JobParamsInvalid, RunAfterInvalid, UnknownKind
from apps.jobs.models import ApiToken, Job
from apps.jobs.registry import JobKind, kind_get
from config import broker
from config.celery import app as celery_app

logger = logging.getLogger(__name__)

Status = Job.Status


def job_params_clean(
    *, kind: JobKind, params: dict, files: MultiValueDict | None = None, user: AbstractBaseUser | None = None
) -> tuple[dict, Form]:
    """Validate params with the kind's form, without side effects: the JSON-safe params and the valid form,
    or JobParamsInvalid."""
    form = kind.form_build(user=user, data=params, files=files)
    if not form.is_valid():
        raise JobParamsInvalid(form)
    if kind.params_from_form is not None:
        cleaned = kind.params_from_form(form)
    else:
        cleaned = {name: value for name, value in form.cleaned_data.items() if not isinstance(value, UploadedFile)}
    # The params travel as JSON; a value JSON cannot carry would fail later, in the worker.
    cleaned = json.loads(json.dumps(cleaned, cls=DjangoJSONEncoder))
    # Nor can PostgreSQL's jsonb hold a NUL character, in a string or a key: the INSERT would fail.
    for name in [name for name, value in cleaned.items() if _holds_nul(name) or _holds_nul(value)]:
        form.add_error(name if name in form.fields else None, "Null characters (\\u0000) are not allowed.")
    if form.errors:
        raise JobParamsInvalid(form)
    return cleaned, form


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(key) or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def job_run_after_check(*, run_after: datetime | None) -> None:
    """Whether a job can wait for `run_after` (the one rule the API, the forms and @task's `.using(run_after=)`
    share), or RunAfterInvalid saying what to change. A time a little in the past runs now; one long past is
    more likely a mistake (a wrong time zone) than a wish, and one too far ahead would wait beyond any sense."""
    if run_after is None:
        return
    if timezone.is_naive(run_after):
        raise RunAfterInvalid("run_after needs a time zone (e.g. 2030-01-31T09:00:00+01:00 or ...Z).")
    now = timezone.now()
    late, latest = settings.CONVEYOR_RUN_AFTER_MAX_PAST_SECONDS, settings.CONVEYOR_RUN_AFTER_MAX_DAYS
    if run_after < now - timedelta(seconds=late):
        raise RunAfterInvalid(
            f"run_after {run_after.isoformat()} is more than {late:g} seconds in the past "
            "(CONVEYOR_RUN_AFTER_MAX_PAST_SECONDS); leave it out to run the job now."
        )
    if run_after > now + timedelta(days=latest):
        raise RunAfterInvalid(
            f"run_after {run_after.isoformat()} is more than {latest} days ahead (CONVEYOR_RUN_AFTER_MAX_DAYS)."
        )


def job_submit(
    *,
    kind: str,
    params: dict,
    submitted_by: AbstractBaseUser | None,
    idempotency_key: str | None = None,
    trace_id: str = "",
    files: MultiValueDict | None = None,
    run_after: datetime | None = None,
    queue: str | None = None,
) -> tuple[Job, bool]:
    """Record a job in the caller's transaction; the outbox relay publishes it once that commits, or at
    `run_after` if that is later (the job is scheduled until then).

    Without a `trace_id` the job takes the current one: the web request's id, or in a worker the
    trace id of the job that submits it. Returns (job, created); created is False when the
    idempotency key names an earlier job with the same kind, params (files compared by content) and run_after,
    in which case nothing is stored. Keys are per submitter; jobs of no submitter (schedules, @task code) share
    one space of keys. A kind's files are stored only for a new job. `queue` overrides the kind's queue (a
    @task's queue_name). A user's submissions are bounded by apps/jobs/limits.py (SubmissionRefused), before
    anything else is done.
    """
    limits.submission_admit(user=submitted_by)
    job_kind = kind_get(kind)
    job_run_after_check(run_after=run_after)
    queue = queue or job_kind.queue
    if queue not in {*settings.CONVEYOR_QUEUES, job_kind.queue}:
        raise ValueError(f"Unknown queue {queue!r}; CONVEYOR_QUEUES names {', '.join(settings.CONVEYOR_QUEUES)}.")
    cleaned, form = job_params_clean(kind=job_kind, params=params, files=files, user=submitted_by)
    submitter = submitted_by if submitted_by is not None and submitted_by.is_authenticated else None
    if idempotency_key:
        existing = _job_for_idempotency_key(submitted_by=submitter, key=idempotency_key, kind=kind, params=cleaned,
                                            run_after=run_after)
        if existing is not None:
            return existing, False
    job = Job(
        id=uuid.uuid4(),
        kind=kind,
        params=cleaned,
        queue=queue,
        idempotency_key=idempotency_key or None,
        trace_id=trace_id or trace_id_var.get(),
        submitted_by=submitter,
        run_after=run_after,
    )
    if job_kind.files_save is not None:
        job_kind.files_save(job, form)
    try:
        _job_record(job)
    except IntegrityError:
        # Another request with the same key won the race (its transaction committed while this INSERT waited
        # for it); answer with its job.
        if not idempotency_key:
            raise
        existing = _job_for_idempotency_key(submitted_by=submitter, key=idempotency_key, kind=kind, params=cleaned,
                                            run_after=run_after)
        if existing is None:
            raise
        return existing, False
    return job, True


def _job_record(job: Job) -> None:
    """The job's INSERT. In a caller's transaction, in a savepoint, so a lost idempotency race does not break
    it. On its own it commits by itself (one round trip instead of two), and rides out a PostgreSQL restart
    for CONVEYOR_WEB_DB_WAIT_SECONDS: a try whose connection broke may have committed, so the next one looks
    for the job before writing it again."""
    if connection.in_atomic_block:
        with transaction.atomic():
            lifecycle.job_record(job=job)
        return
    tried = False

    def record() -> None:
        nonlocal tried
        if tried and Job.objects.filter(id=job.id).exists():
            return
        tried = True
        lifecycle.job_record(job=job)

    database_retried(record, wait_seconds=settings.CONVEYOR_WEB_DB_WAIT_SECONDS, what=f"recording job {job.id}")


def _job_for_idempotency_key(*, submitted_by: AbstractBaseUser | None, key: str, kind: str, params: dict,
                             run_after: datetime | None) -> Job | None:
    jobs = Job.objects.filter(idempotency_key=key)
    jobs = jobs.filter(submitted_by=submitted_by) if submitted_by is not None else jobs.filter(submitted_by=None)
    job = jobs.first()
    if job is not None and (job.kind != kind or job.params != params or job.run_after != run_after):
        raise IdempotencyKeyReused(
            f"Idempotency key {key!r} was already used for a different job ({job.kind}, {job.id}). "
            "Use a new key for a new job."
        )
    return job


# --- Operator actions ----------------------------------------------------------------------------------


def job_retry(*, job: Job, by: AbstractBaseUser | None = None) -> Job:
    """Run a failed or cancelled job again as a new attempt; its earlier attempts stay in history.

    Back in the outbox, it is published by the relay once this commits, with a new generation: a message
    left from its earlier run is dropped by the fence. `by`: the user who asks (see _job_act_as).
    """
    return _job_act_as(by=by, job=job, action="retry", act=lambda: lifecycle.job_retry(job=job))


def job_cancel(*, job: Job, by: AbstractBaseUser | None = None) -> Job:
    """Cancel a waiting job, scheduled ones included (it never runs), or a running job of an interruptible kind.

    `by`: the user who asks (see _job_act_as).
    """
    return _job_act_as(by=by, job=job, action="cancel",
                       act=lambda: lifecycle.job_cancel(job=job, kind=_kind_or_none(job.kind)))


def _job_act_as(*, by: AbstractBaseUser | None, job: Job, action: str, act: Callable[[], Job]) -> Job:
    """An operator action asked for by `by`: ActionForbidden unless they may act on the job, else the action and
    its record in the admin log (who, when, what), committed together. None is Conveyor's own code: no check,
    no record."""
    if by is None:
        return act()
    if not selectors.job_action_permitted(user=by, job=job):
        raise ActionForbidden(
            f"You can see job {job.id} but not {action} it: acting on another user's job needs the permission "
            "to change jobs."
        )
    was = job.status
    with transaction.atomic():
        job = act()
        audit.operator_action_record(user=by, objects=[job], message=f"{action}: {was} → {job.status}")
    return job


def _kind_or_none(name: str) -> JobKind | None:
    try:
        return kind_get(name)
    except UnknownKind:
        return None


def dead_letters_redrive(*, limit: int = 1000, by: AbstractBaseUser | None = None) -> int:
    """Take up to `limit` messages out of the dead queue and run their jobs again; how many.

    A failed or cancelled job runs again as a new attempt (an operator's retry). A job still waiting or
    running whose message RabbitMQ dead-lettered (its delivery limit) goes back to the outbox, unless a
    live attempt holds it. A dead letter whose job is gone, succeeded, or was dispatched again since is
    dropped: running it would run the job twice. Every job is published by the relay. Each job re-driven is
    recorded in the admin log as done by `by`, when given.
    """
    redriven = 0
    with celery_app.connection_for_write() as broker_connection:
        queue = broker.dead_queue()(broker_connection.default_channel)
        queue.declare()
        for _ in range(limit):
            message = queue.get(no_ack=False)
            if message is None:
                break
            _, kwargs, _ = message.decode()
            with transaction.atomic():
                job = _dead_letter_redrive(job_id=message.headers.get("id"), generation=kwargs.get("generation", 0))
                if job is not None and by is not None:
                    audit.operator_action_record(user=by, objects=[job], message="re-drive from the dead queue")
            redriven += job is not None
            message.ack()
    return redriven


def _dead_letter_redrive(*, job_id: str | None, generation: int) -> Job | None:
    """The dead letter's job, put back to run; None when it is dropped."""
    job = Job.objects.filter(id=job_id).first() if job_id else None
    if job is None or job.status == Status.SUCCEEDED:
        return None
    if job.status in lifecycle.RETRY.sources:
        return lifecycle.job_retry(job=job)
    if job.generation != generation or job.id in lifecycle.jobs_alive(job_ids=[job.id]):
        return None
    return job if lifecycle.jobs_redispatch(job_ids=[job.id], statuses=[job.status]) else None


# --- API tokens ----------------------------------------------------------------------------------------


def api_token_create(*, username: str) -> tuple[str, bool]:
    """A new bearer token for `username` (the user is created when missing); (token, user_created)."""
    user, user_created = get_user_model().objects.get_or_create(username=username)
    token = secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, key_hash=ApiToken.hash_of(token))
    return token, user_created

