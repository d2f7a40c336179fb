"""A @task job read back as Django's TaskResult, from the job's own rows (Job and its JobAttempts): what
get_result(), refresh(), the TaskContext and the signals carry.

Statuses: queued, scheduled and retrying are READY (a retrying job runs again; its failed attempts so far are
in `errors`); running is RUNNING; succeeded is SUCCESSFUL; failed is FAILED; cancelled is FAILED too (Django has
no cancelled status, and a cancelled task will not run), with a last error of class apps.jobs.errors.JobCancelled.
"""
import re

from apps.jobs.models import Job, JobAttempt
from apps.tasks.framework import Task, TaskError, TaskResult, TaskResultStatus

Status, Outcome = Job.Status, JobAttempt.Outcome

STATUSES = {
    Status.QUEUED: TaskResultStatus.READY,
    Status.SCHEDULED: TaskResultStatus.READY,
    Status.RETRYING: TaskResultStatus.READY,
    Status.RUNNING: TaskResultStatus.RUNNING,
    Status.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    Status.FAILED: TaskResultStatus.FAILED,
    Status.CANCELLED: TaskResultStatus.FAILED,
}
# Attempts that end in an error a TaskResult lists.
FAILED_OUTCOMES = (Outcome.RETRYING, Outcome.FAILED, Outcome.LOST)
_CLASS_PATH = re.compile(r"[A-Za-z_][\w.]*")


class WorkerLost(Exception):
    """The class a TaskResult names for an attempt whose worker died (killed, out of memory, its hard time limit):
    no exception was raised in it, so its traceback is the reason Conveyor recorded."""


def task_result_build(*, job: Job, task: Task, attempts: list[JobAttempt]) -> TaskResult:
    """The TaskResult of `job`, a job of `task`, given its attempts oldest first."""
    errors = [_task_error(attempt) for attempt in attempts if attempt.outcome in FAILED_OUTCOMES]
    if job.status == Status.CANCELLED:
        errors.append(TaskError(exception_class_path="apps.jobs.errors.JobCancelled",
                                traceback=f"Cancelled by an operator at {job.finished_at:%Y-%m-%d %H:%M:%S %Z}."))
    params = job.params or {}
    result = TaskResult(
        task=task.using(queue_name=job.queue, run_after=job.run_after),
        id=str(job.id),
        status=STATUSES[job.status],
        enqueued_at=job.created_at,
        started_at=attempts[0].started_at if attempts else None,
        finished_at=job.finished_at,
        last_attempted_at=attempts[-1].started_at if attempts else None,
        args=params.get("args", []),
        kwargs=params.get("kwargs", {}),
        backend=task.backend,
        errors=errors,
        # One per attempt, so that TaskResult.attempts and TaskContext.attempt count the attempts.
        worker_ids=[attempt.worker for attempt in attempts],
    )
    if job.status == Status.SUCCEEDED and attempts:
        object.__setattr__(result, "_return_value", attempts[-1].result)
    return result


def _task_error(attempt: JobAttempt) -> TaskError:
    path = exception_class_path(attempt.traceback)
    if path is not None:
        return TaskError(exception_class_path=path, traceback=attempt.traceback)
    if attempt.outcome == Outcome.LOST:
        return TaskError(exception_class_path=f"{__name__}.WorkerLost", traceback=attempt.error)
    # Failed by Conveyor rather than by a raise (a result JSON cannot carry, a poison message): the reason as given.
    return TaskError(exception_class_path="apps.jobs.errors.PermanentJobError", traceback=attempt.error)


def exception_class_path(traceback: str) -> str | None:
    """The import path of the exception a formatted traceback ends with (`builtins.ValueError`,
    `billing.errors.CardDeclined`), or None when `traceback` is not one.

    The attempt keeps the traceback as text; Python writes the exception's line right after the last frame
    (frames and their source lines are indented), naming the class by module and qualified name except for
    builtins."""
    lines = traceback.rstrip("\n").splitlines()
    frames = [index for index, line in enumerate(lines) if line.startswith("  ")]
    if not frames or frames[-1] + 1 >= len(lines):
        return None
    name = lines[frames[-1] + 1].split(":", 1)[0].strip()
    if not _CLASS_PATH.fullmatch(name):
        return None
    return name if "." in name else f"builtins.{name}"

