"""The Conveyor backend of Django's Tasks API: `@task` functions enqueued as Conveyor jobs.

    TASKS = {"default": {"BACKEND": "apps.tasks.backend.ConveyorBackend", "QUEUES": ["default"], "OPTIONS": {}}}

enqueue() checks that the arguments round-trip through JSON, records the job in the caller's transaction (the
outbox relay publishes it once that commits, or at its run_after), and returns a TaskResult whose id is the job's.
get_result() and TaskResult.refresh() read the job's rows (apps/tasks/results.py). Retries, backoff, time limits,
the fence, dead letters, the admin, metrics, logs and trace ids are those of every Conveyor job.

What it supports, as Django asks each backend to declare:
- supports_defer: run_after holds the job as `scheduled`, a row due at that time (durable, no worker memory).
- supports_get_result: results live in PostgreSQL, readable from any process.
- supports_async_task: an async function runs in an event loop of its own in the worker process.
- supports_priority: no. A job's priority could only order the outbox, which is empty whenever RabbitMQ takes
  jobs as fast as they come, and RabbitMQ's quorum queues (Conveyor's) have no priorities before RabbitMQ 4.0
  (then two levels); work would not be ordered, so Django's own validation refuses a priority other than 0.
"""
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import transaction
from django.utils.module_loading import import_string

from apps.jobs.errors import RunAfterInvalid
from apps.jobs.models import Job
from apps.jobs.registry import RetryPolicy
from apps.jobs.selectors import job_attempts
from apps.jobs.services import job_submit
from apps.tasks.forms import call_arguments_normalized
from apps.tasks.framework import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    task_enqueued,
)
from apps.tasks.kinds import task_kind_register, task_of_kind
from apps.tasks.results import task_result_build

# What a @task's retry policy and time limits may say, in OPTIONS, OPTIONS["TASKS"][path] or the decorator.
POLICY_OPTIONS = ("retry_on", "max_retries", "backoff_base", "backoff_cap", "soft_time_limit", "time_limit")
KIND_NAME_MAX = Job._meta.get_field("kind").max_length


@dataclass(frozen=True, slots=True, kw_only=True)
class ConveyorTask(Task):
    """Django's Task with Conveyor's retry policy and time limits. django-tasks 0.11+ (and Django 6.1) pass the
    decorator's extra keyword arguments here: `@task(max_retries=8, retry_on=(ConnectionError,))`; on Django 6.0
    they come from OPTIONS. None means: as OPTIONS, or Conveyor's defaults, say."""

    retry_on: tuple | None = None  # exception classes, or their import paths, that are worth a retry
    max_retries: int | None = None
    backoff_base: float | None = None
    backoff_cap: float | None = None
    soft_time_limit: int | None = None
    time_limit: int | None = None

    def __post_init__(self) -> None:
        Task.__post_init__(self)  # the backend's validate_task; not super(): slots make a new class
        self.get_backend().task_kind_register(self)


class ConveyorBackend(BaseTaskBackend):
    task_class = ConveyorTask
    supports_defer = True
    supports_get_result = True
    supports_async_task = True
    supports_priority = False

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        if len(task.module_path) > KIND_NAME_MAX:
            raise InvalidTask(f"The task's import path {task.module_path!r} is its job kind, at most {KIND_NAME_MAX} "
                              "characters; move or rename the function.")
        if task.queue_name not in settings.CONVEYOR_QUEUES:
            raise InvalidTask(f"Queue {task.queue_name!r} is not a Conveyor queue; CONVEYOR_QUEUES names "
                              f"{', '.join(settings.CONVEYOR_QUEUES)}.")

    def task_kind_register(self, task: Task) -> None:
        """Make `task`'s function a job kind, with its retry policy and time limits."""
        policy = self.task_policy(task)
        defaults = RetryPolicy()
        retry = RetryPolicy(
            transient=tuple(_exception_class(item) for item in policy.get("retry_on") or defaults.transient),
            max_retries=policy.get("max_retries", defaults.max_retries),
            backoff_base=policy.get("backoff_base", defaults.backoff_base),
            backoff_cap=policy.get("backoff_cap", defaults.backoff_cap),
        )
        task_kind_register(task=task, retry=retry, soft_time_limit=policy.get("soft_time_limit"),
                           time_limit=policy.get("time_limit"))

    def task_policy(self, task: Task) -> dict[str, Any]:
        """The task's retry policy and time limits: the decorator's, else OPTIONS["TASKS"][its path], else
        OPTIONS; what none of them says is left out (Conveyor's defaults)."""
        per_task = self.options.get("TASKS", {}).get(task.module_path, {})
        policy = {}
        for name in POLICY_OPTIONS:
            for source in (getattr(task, name, None), per_task.get(name), self.options.get(name)):
                if source is not None:
                    policy[name] = source
                    break
        return policy

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Record the call as a job in the caller's transaction; its TaskResult, READY. Django's task_enqueued is
        sent once the job is committed (at once outside a transaction; never if it rolls back)."""
        self.validate_task(task)
        try:
            args, kwargs = call_arguments_normalized(args, kwargs)
        except ValueError as exc:
            raise InvalidTask(f"{task.module_path} cannot be enqueued: {exc}") from None
        try:
            job, _ = job_submit(kind=task.module_path, params={"args": args, "kwargs": kwargs}, submitted_by=None,
                                run_after=task.run_after, queue=task.queue_name)
        except RunAfterInvalid as exc:
            raise InvalidTask(str(exc)) from None
        result = task_result_build(job=job, task=task, attempts=[])
        transaction.on_commit(lambda: task_enqueued.send(type(self), task_result=result))
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The TaskResult of the job with this id, read from its rows; TaskResultDoesNotExist if there is no such
        job, or it is not a @task job of this backend."""
        try:
            job = Job.objects.filter(id=uuid.UUID(str(result_id))).first()
        except ValueError:
            job = None
        task = task_of_kind(job.kind, backend=self.alias) if job is not None else None
        if job is None or task is None:
            raise TaskResultDoesNotExist(f"No @task job {result_id!r} of backend {self.alias!r}.")
        return task_result_build(job=job, task=task, attempts=job_attempts(job=job))

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        problems = []
        for queue in sorted(self.queues - set(settings.CONVEYOR_QUEUES)):
            problems.append(checks.Error(
                f"TASKS[{self.alias!r}]['QUEUES'] names {queue!r}, which is not a Conveyor queue.",
                hint=f"Use the queues of CONVEYOR_QUEUES ({', '.join(settings.CONVEYOR_QUEUES)}).",
                id="conveyor_tasks.E001",
            ))
        known = {*POLICY_OPTIONS, "TASKS"}
        for where, options in [("OPTIONS", self.options),
                               *((f"OPTIONS['TASKS'][{path!r}]", per_task)
                                 for path, per_task in self.options.get("TASKS", {}).items())]:
            for name in sorted(set(options) - (known if where == "OPTIONS" else set(POLICY_OPTIONS))):
                problems.append(checks.Error(
                    f"TASKS[{self.alias!r}]{where} has {name!r}, which Conveyor does not know.",
                    hint=f"Conveyor reads {', '.join(POLICY_OPTIONS)}.",
                    id="conveyor_tasks.E002",
                ))
        return problems


def _exception_class(item: type[BaseException] | str) -> type[BaseException]:
    """An exception class of retry_on, given as itself or by its import path."""
    found = import_string(item) if isinstance(item, str) else item
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise InvalidTask(f"retry_on names {item!r}, which is not an exception class.")
    return found
