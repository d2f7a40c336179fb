"""Job kinds only the tests use: one that kills its worker, one no worker reads, ones that fail on purpose; and the
tests' @task functions.

The test worker imports this module too (celery worker --include), so both sides know the kinds.
"""
import os
import signal
import time
from pathlib import Path

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django import forms

from apps.jobs.errors import PermanentJobError, TransientJobError
from apps.jobs.executor import JobRun, JobTask
from apps.jobs.registry import JobKind, RetryPolicy, kind_register
from tests.tasks import task_functions  # noqa: F401  (the tests' @task functions are kinds of these processes too)


class EmptyForm(forms.Form):
    pass


@shared_task(base=JobTask, name="tests.crash")
def crash_task(run: JobRun) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(base=JobTask, name="tests.held")
def held_task(run: JobRun) -> dict:
    return {}


kind_register(JobKind("tests.crash", crash_task, EmptyForm, title="Crash", description="Kills its worker process."))
# On a queue no test worker consumes, so its messages stay put and the queue fills up.
kind_register(JobKind("tests.held", held_task, EmptyForm, title="Held", queue="held"))


@shared_task(base=JobTask, name="tests.transient")
def transient_task(run: JobRun) -> None:
    raise TransientJobError(f"Still unavailable on attempt {run.attempt}.")


# Retries quickly (at most 1 s, then 2 s) so the give-up path is tested in seconds.
kind_register(
    JobKind(
        "tests.transient",
        transient_task,
        EmptyForm,
        title="Always transient",
        retry=RetryPolicy(max_retries=2, backoff_base=1.0, backoff_cap=2.0),
    )
)


@shared_task(base=JobTask, name="tests.fail_first")
def fail_first_task(run: JobRun) -> dict:
    if run.attempt == 1:
        raise PermanentJobError("Fails on its first attempt on purpose; an operator's retry succeeds.")
    return {"attempt": run.attempt}


# For the operator's retry: it fails for good once, then succeeds when retried.
kind_register(JobKind("tests.fail_first", fail_first_task, EmptyForm, title="Fails first"))


class GateForm(forms.Form):
    path = forms.CharField(max_length=500)


@shared_task(base=JobTask, name="tests.gate")
def gate_task(run: JobRun) -> dict:
    """Says it started (the file `<path>.started`), then runs until the test creates the file `path`."""
    gate = Path(run.params["path"])
    gate.with_suffix(".started").write_text(str(run.attempt))
    deadline = time.monotonic() + 60
    while not gate.exists():
        if time.monotonic() > deadline:
            raise PermanentJobError("The test never opened the gate.")
        time.sleep(0.05)
    return {"gate": "opened", "attempt": run.attempt}


# For the moment an attempt ends: the test decides it, for instance while PostgreSQL is stopped.
kind_register(JobKind("tests.gate", gate_task, GateForm, title="Gate"))


class RetryOnceForm(forms.Form):
    wait = forms.FloatField(min_value=0, max_value=60)


@shared_task(base=JobTask, name="tests.retry_once")
def retry_once_task(run: JobRun) -> dict:
    if run.attempt == 1:
        raise TransientJobError("Retry me once, after the wait asked for.", retry_after=run.params["wait"])
    return {"attempt": run.attempt}


# Its retry falls due exactly when the test says, not at a random moment of a backoff.
kind_register(JobKind("tests.retry_once", retry_once_task, RetryOnceForm, title="Retry once",
                      retry=RetryPolicy(max_retries=1, backoff_base=0.001, backoff_cap=60)))


@shared_task(base=JobTask, name="tests.stubborn")
def stubborn_task(run: JobRun) -> dict:
    """Ignores its soft time limit and runs until the test creates the file `path` (for the hard limit)."""
    gate = Path(run.params["path"])
    gate.with_suffix(".started").write_text(str(run.attempt))
    while not gate.exists():
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            gate.with_suffix(".soft").write_text("ignored")
    return {"gate": "opened"}


kind_register(JobKind("tests.stubborn", stubborn_task, GateForm, title="Stubborn"))


class SizeForm(forms.Form):
    size = forms.IntegerField(min_value=0)


@shared_task(base=JobTask, name="tests.big_result")
def big_result_task(run: JobRun) -> dict:
    return {"blob": "x" * run.params["size"]}


kind_register(JobKind("tests.big_result", big_result_task, SizeForm, title="Big result"))
