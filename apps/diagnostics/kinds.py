"""Diagnostic kinds: noop, sleep, flaky and fail."""
from celery import shared_task

from apps.diagnostics import forms, services
from apps.jobs.executor import JobRun, JobTask
from apps.jobs.registry import JobKind, RetryPolicy, kind_register


@shared_task(base=JobTask, name="diagnostics.noop")
def noop_task(run: JobRun) -> dict:
    return {}


@shared_task(base=JobTask, name="diagnostics.sleep")
def sleep_task(run: JobRun) -> dict:
    return services.diagnostics_sleep(
        seconds=run.params["seconds"], steps=run.params.get("steps") or 10, progress=run.progress
    )


@shared_task(base=JobTask, name="diagnostics.flaky")
def flaky_task(run: JobRun) -> dict:
    return services.diagnostics_flaky(failures=run.params["failures"], attempt=run.attempt)


@shared_task(base=JobTask, name="diagnostics.fail")
def fail_task(run: JobRun) -> None:
    services.diagnostics_fail(message=run.params["message"])


kind_register(JobKind("diagnostics.noop", noop_task, forms.NoopForm, title="No-op", description="Does nothing."))
kind_register(
    JobKind(
        "diagnostics.sleep",
        sleep_task,
        forms.SleepForm,
        title="Sleep",
        description="Sleeps, reporting progress at each step. Can be cancelled while it runs.",
        interruptible=True,
    )
)
kind_register(
    JobKind(
        "diagnostics.flaky",
        flaky_task,
        forms.FlakyForm,
        title="Flaky",
        description="Fails with a transient error N times, then succeeds.",
        retry=RetryPolicy(max_retries=5, backoff_base=1.0, backoff_cap=600.0),
    )
)
kind_register(
    JobKind(
        "diagnostics.fail", fail_task, forms.FailForm, title="Fail", description="Fails at once with a permanent error."
    )
)
