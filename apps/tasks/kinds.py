"""Each @task function on Conveyor is a job kind named by its import path (`billing.tasks.send_invoice`), so it
shows in the admin, the dashboard, /metrics, Flower and the API like any kind: its JobKind (input checked by
TaskCallForm, retry policy and time limits from the backend), its Celery task of the same name (base JobTask:
the fence, the outcome in the job's rows, retries as outbox rows), and the runner that calls the function in the
worker with Django's TaskContext and signals.

A kind is registered when the module defining the function is imported (the @task decorator builds the backend's
task), which apps/tasks/apps.py makes sure of in every process for each app's `tasks` module.
"""
import contextvars
import logging
from typing import Any

from celery import shared_task
from celery.signals import task_postrun
from django.utils.module_loading import import_string

from apps.jobs.errors import PermanentJobError
from apps.jobs.executor import JobRun, JobTask
from apps.jobs.models import Job
from apps.jobs.registry import JobKind, RetryPolicy, kind_find, kind_register
from apps.jobs.selectors import job_attempts
from apps.tasks.forms import TaskCallForm, json_value_normalized
from apps.tasks.framework import Task, TaskContext, task_finished, task_started
from apps.tasks.results import task_result_build

logger = logging.getLogger(__name__)

# The @task of each kind registered here, by kind name (the function's import path).
_tasks: dict[str, Task] = {}
# The job whose attempt the runner ran in this pool process, for the end of the delivery (task_postrun).
_ran: contextvars.ContextVar[str] = contextvars.ContextVar("conveyor_task_ran", default="")


def task_kind_register(*, task: Task, retry: RetryPolicy, soft_time_limit: int | None,
                       time_limit: int | None) -> JobKind:
    """The kind of `task`'s function, registered on first sight (a later `.using()` copy finds it)."""
    name = task.module_path
    kind = kind_find(name)
    if kind is not None:
        return kind
    doc = (task.func.__doc__ or "").strip()
    kind = JobKind(
        name,
        shared_task(base=JobTask, name=name)(task_function_run),
        TaskCallForm,
        title=doc.splitlines()[0] if doc else f"@task {task.func.__name__}",
        description=f"A @task function of Django's Tasks API. {doc}".strip(),
        queue=task.queue_name,
        retry=retry,
        soft_time_limit=soft_time_limit,
        time_limit=time_limit,
        user_submittable=False,
    )
    kind_register(kind)
    _tasks[name] = task
    return kind


def task_of_kind(name: str, *, backend: str) -> Task | None:
    """The @task whose kind is `name`, on backend `backend`; None when `name` is not a @task's kind.

    A process that has not imported the function's module (a web process reading a result) imports it: the name
    comes from a job row, which only job_submit writes, for kinds registered by code."""
    task = _tasks.get(name)
    if task is None and kind_find(name) is None:
        try:
            found = import_string(name)
        except ImportError:
            return None
        task = found if isinstance(found, Task) else None
    return task if task is not None and task.backend == backend else None


def task_function_run(run: JobRun) -> Any:
    """One attempt of a @task job, in the worker: Django's task_started, the function with the job's arguments
    (and a TaskContext first when it takes one; an async function runs in an event loop of its own), and its return
    value, refused unless JSON carries it unchanged. What it raises is the attempt's outcome, as for any kind."""
    task = _tasks[run.kind.name]
    result = task_result_build(job=run.job, task=task, attempts=job_attempts(job=run.job))
    _ran.set(str(run.job.id))
    task_started.send(sender=type(task.get_backend()), task_result=result)
    args, kwargs = run.params.get("args", []), run.params.get("kwargs", {})
    if task.takes_context:
        value = task.call(TaskContext(task_result=result), *args, **kwargs)
    else:
        value = task.call(*args, **kwargs)
    try:
        return json_value_normalized(value, path="The return value")
    except ValueError as exc:
        raise PermanentJobError(f"{exc} Return JSON values from a @task function.") from None


@task_postrun.connect
def _task_finished_send(sender=None, task_id: str = "", **kwargs) -> None:
    """Django's task_finished, once the delivery that ran an attempt has stored its outcome and the job has finished
    (succeeded, failed or cancelled): not after an attempt that will be retried, nor for a delivery the fence
    dropped."""
    if not task_id or _ran.get() != task_id:
        return
    _ran.set("")
    try:
        job = Job.objects.filter(id=task_id).first()
        task = _tasks.get(sender.name) if sender is not None else None
        if job is None or task is None or not job.is_finished:
            return
        result = task_result_build(job=job, task=task, attempts=job_attempts(job=job))
        task_finished.send(sender=type(task.get_backend()), task_result=result)
    except Exception:  # a receiver's error must not become the delivery's: the outcome is stored already
        logger.exception("Sending task_finished for job %s failed", task_id)

