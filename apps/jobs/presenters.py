"""Jobs and kinds as JSON (the API and the job page's live updates) and as a person reads them (pages, admin)."""
import json
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder
from django.urls import reverse

from apps.jobs import selectors
from apps.jobs.errors import UnknownKind
from apps.jobs.models import Job, JobAttempt
from apps.jobs.registry import JobKind, kind_get


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _kind_or_none(job: Job) -> JobKind | None:
    try:
        return kind_get(job.kind)
    except UnknownKind:  # a job of a kind this deployment no longer has
        return None


def job_json(*, job: Job, viewer: AbstractBaseUser, attempts: list[JobAttempt] | None = None) -> dict:
    """The job as JSON, with the operator actions its state allows now and `viewer` may take; given its
    `attempts` (one job, not lists), also its result, traceback and attempt history."""
    kind = _kind_or_none(job)
    data = {
        "id": str(job.id),
        "kind": job.kind,
        "params": job.params,
        "queue": job.queue,
        "status": job.status,
        "attempts": job.attempts,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "error": job.error,
        "next_retry_at": _iso(job.due_at) if job.status == Job.Status.RETRYING else None,
        "run_after": _iso(job.run_after),
        "idempotency_key": job.idempotency_key,
        "trace_id": job.trace_id,
        "created_at": _iso(job.created_at),
        "published_at": _iso(job.published_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "actions": selectors.job_actions_for(user=viewer, job=job, kind=kind),
        "url": reverse("api:job", args=[job.id]),
        "page_url": reverse("jobs:detail", args=[job.id]),
    }
    if attempts is not None:
        last = attempts[-1] if attempts else None
        succeeded = last is not None and last.outcome == JobAttempt.Outcome.SUCCEEDED
        data["result"] = last.result if succeeded else None
        data["traceback"] = last.traceback if last is not None else ""
        data["attempt_history"] = [
            {
                "number": attempt.number,
                "worker": attempt.worker,
                "started_at": _iso(attempt.started_at),
                "finished_at": _iso(attempt.finished_at),
                "outcome": attempt.outcome,
                "error": attempt.error,
                "retry_delay": attempt.retry_delay,
                "result": attempt.result,
                "log": attempt.log,
            }
            for attempt in attempts
        ]
        data["details"] = kind.details(job) if kind is not None and kind.details is not None else None
    return data


def kind_json(*, kind: JobKind) -> dict:
    form = kind.form()
    return {
        "name": kind.name,
        "title": kind.title,
        "description": kind.description,
        "queue": kind.queue,
        "interruptible": kind.interruptible,
        "max_retries": kind.retry.max_retries,
        "fields": [
            {
                "name": name,
                "type": type(field).__name__.removesuffix("Field").lower(),
                "required": field.required,
                "label": str(field.label or name),
                "help_text": str(field.help_text),
                "initial": field.initial,
                "choices": [value for value, _ in getattr(field, "choices", [])] or None,
            }
            for name, field in form.fields.items()
        ],
    }


def json_pretty(value: object) -> str:
    """Params or a result as indented JSON, the way the API sends them."""
    return json.dumps(value, indent=2, sort_keys=True, cls=DjangoJSONEncoder)


def seconds_text(seconds: float | None) -> str:
    """A duration as a person reads it: `0.42 s`, `12.3 s`, `4 min 5 s`, `2 h 3 min`; `—` when unknown."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _between(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


@dataclass(frozen=True)
class AttemptRow:
    """One attempt on the job page and in the admin: when, how long, how long it waited before."""

    attempt: JobAttempt
    waited: str  # since the job was submitted (first attempt) or the previous attempt ended
    duration: str
    retry_delay: str  # the backoff it asked for before the next attempt


def attempt_rows(*, job: Job, attempts: list[JobAttempt]) -> list[AttemptRow]:
    rows, previous_end = [], job.created_at
    for attempt in attempts:
        rows.append(AttemptRow(
            attempt=attempt,
            waited=seconds_text(_between(previous_end, attempt.started_at)),
            duration=seconds_text(_between(attempt.started_at, attempt.finished_at)),
            retry_delay=seconds_text(attempt.retry_delay) if attempt.retry_delay is not None else "",
        ))
        previous_end = attempt.finished_at or attempt.started_at
    return rows
