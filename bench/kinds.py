"""The job kind only the backlog benchmark uses: its first attempt waits in retry backoff, its second succeeds.

The benchmark's worker imports this module (celery worker --include bench.kinds), as does the harness.
"""
from celery import shared_task
from django import forms

from apps.jobs.errors import TransientJobError
from apps.jobs.executor import JobRun, JobTask
from apps.jobs.registry import JobKind, RetryPolicy, kind_register


class RetryOnceForm(forms.Form):
    wait = forms.IntegerField(min_value=1, max_value=600, help_text="Seconds the retry waits in the outbox.")


@shared_task(base=JobTask, name="bench.retry_once")
def retry_once_task(run: JobRun) -> dict:
    if run.attempt == 1:
        raise TransientJobError("The backlog benchmark's planned wait.", retry_after=run.params["wait"])
    return {}


kind_register(
    JobKind(
        "bench.retry_once",
        retry_once_task,
        RetryOnceForm,
        title="Retry once",
        description="Waits once in retry backoff, then succeeds.",
        retry=RetryPolicy(max_retries=1, backoff_base=1.0, backoff_cap=600.0),
    )
)
