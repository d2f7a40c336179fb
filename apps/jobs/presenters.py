"""JSON shapes of jobs and kinds, shared by the API and the job page's live updates."""
import json

from django.urls import reverse
from django_celery_results.models import TaskResult

from apps.jobs.errors import UnknownKind
from apps.jobs.models import Job
from apps.jobs.registry import JobKind, kind_get


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def job_json(*, job: Job, task_result: TaskResult | None = None, detail: bool = False) -> dict:
    """The job as JSON; `detail` adds its result, traceback and attempt history (one job, not lists)."""
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
        "next_retry_at": _iso(job.next_retry_at),
        "idempotency_key": job.idempotency_key,
        "trace_id": job.trace_id,
        "created_at": _iso(job.created_at),
        "published_at": _iso(job.published_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "url": reverse("api:job", args=[job.id]),
        "page_url": reverse("jobs:detail", args=[job.id]),
    }
    if detail:
        succeeded = task_result is not None and task_result.status == "SUCCESS"
        data["result"] = _result_value(task_result) if succeeded else None
        data["traceback"] = (task_result.traceback or "") if task_result is not None else ""
        data["attempt_history"] = [
            {
                "number": attempt.number,
                "worker": attempt.worker,
                "started_at": _iso(attempt.started_at),
                "finished_at": _iso(attempt.finished_at),
                "outcome": attempt.outcome,
                "error": attempt.error,
                "retry_delay": attempt.retry_delay,
                "log": attempt.log,
            }
            for attempt in job.attempt_set.all()
        ]
        data["details"] = _kind_details(job)
    return data


def _kind_details(job: Job) -> object:
    try:
        kind = kind_get(job.kind)
    except UnknownKind:  # a job of a kind this deployment no longer has
        return None
    return kind.details(job) if kind.details is not None else None


def _result_value(task_result: TaskResult):
    try:
        return json.loads(task_result.result) if task_result.result else None
    except ValueError:
        return task_result.result


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
