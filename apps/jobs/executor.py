"""The job task class every kind's Celery task uses: one delivery of a job's message, run as one pipeline.

    fence and start (one statement) ─▶ perform the kind's function ─▶ record the outcome (one statement,
    committed before the message is acknowledged) ─▶ acknowledge, or reject into the dead queue on failure

Celery sees one delivery, not the job: a delivery that ends the job's attempt in a retry or a cancellation, or
that the fence refuses, returns a note saying so (Celery logs it and Flower shows it as the delivery's result)
and its message is acknowledged. Only a failure leaves Celery's trace through an exception (Reject, into the
dead queue): each such exception costs Celery two copies of the traceback, hundreds of KB for its long trace
function, which a worker retrying thousands of jobs at 32 at a time did not give back (`make bench --large`).

A kind's task function receives a JobRun (params, attempt, progress) and returns a small JSON result. Each
outcome has one clause in `_perform`; each state change is a statement of apps/jobs/lifecycle.py. The worker
never publishes a job's message: a retry is a row due in the outbox, which the relay publishes when due.
While PostgreSQL is unreachable the worker waits for it holding the message, and past
CONVEYOR_WORKER_DB_WAIT_SECONDS hands the message back to RabbitMQ; it never fails or dead-letters a job
for it.
"""
import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.signals import task_postrun
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from apps.jobs import lifecycle
from apps.jobs.context import job_id_var, trace_id_var
from apps.jobs.database import CONNECTION_ERRORS, DatabaseUnavailable, database_retried
from apps.jobs.errors import JobCancelled
from apps.jobs.lifecycle import Verdict
from apps.jobs.logs import job_log_capture
from apps.jobs.models import Job, JobAttempt
from apps.jobs.registry import JobKind, RetryPolicy, kind_for_task
from apps.jobs.timelimits import job_code_watched

logger = logging.getLogger(__name__)

T = TypeVar("T")
Outcome = JobAttempt.Outcome
# How long, and how often, a redelivered message's start is tried again while the job still looks held.
TAKEOVER_WAIT_SECONDS = 3.0
TAKEOVER_POLL_SECONDS = 0.1


@dataclass
class JobRun:
    """What a kind's task sees of its job."""

    job: Job
    kind: JobKind

    @property
    def params(self) -> dict:
        return self.job.params

    @property
    def attempt(self) -> int:
        return self.job.attempts

    def progress(self, percent: float, message: str = "") -> None:
        """Report progress (0-100); in an interruptible kind, raises JobCancelled if the job was cancelled."""
        recorded = lifecycle.attempt_progress(job=self.job, percent=int(percent), message=message)
        if not recorded and self.kind.interruptible:
            raise JobCancelled(f"Job {self.job.id} was cancelled while it ran.")


@dataclass(frozen=True)
class AttemptEnd:
    """How one attempt ended, before it is recorded: one clause per outcome in `record`."""

    outcome: str  # a JobAttempt.Outcome
    result: Any = None
    result_json: str = "null"
    error: str = ""
    traceback: str = ""
    delay: float = 0.0
    spends_retry: bool = True

    def record(self, *, job: Job, log: list[dict]) -> bool:
        """Write it with the job's state (one statement); False when the job was no longer this attempt's."""
        match self.outcome:
            case Outcome.SUCCEEDED:
                return lifecycle.attempt_succeed(job=job, result_json=self.result_json, log=log)
            case Outcome.RETRYING:
                return lifecycle.attempt_retry_later(job=job, error=self.error, traceback=self.traceback,
                                                     delay=self.delay, log=log, spends_retry=self.spends_retry)
            case Outcome.FAILED:
                return lifecycle.attempt_fail(job=job, error=self.error, traceback=self.traceback, log=log)
            case Outcome.CANCELLED:
                lifecycle.attempt_cancelled(job=job, log=log)
                return True
        raise ValueError(f"An attempt cannot end {self.outcome!r}.")

    def delivery_result(self) -> Any:
        """What Celery logs and Flower shows as the delivery's result: the kind's result, or what happened."""
        match self.outcome:
            case Outcome.SUCCEEDED:
                return self.result
            case Outcome.RETRYING:
                return f"Retrying in {self.delay:g} s: {self.error}"
            case Outcome.CANCELLED:
                return "Cancelled while it ran."
        raise ValueError(f"An attempt that ended {self.outcome!r} has no delivery result.")


class JobTask(Task):
    # Retries wait as rows in the outbox, not inside the worker.
    autoretry_for = ()
    typing = False
    # "Running" and the outcome are facts of the job's own rows (lifecycle); Celery's result backend stores
    # nothing for a job, so nothing Celery cleans up can take a job's outcome away.
    track_started = False
    ignore_result = True
    store_errors_even_if_ignored = False

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        # From here to the delivery's end (`_delivery_end`), every log line (Celery's "succeeded"/"rejected"
        # lines too) names the job and the request that submitted it (the trace_id header the relay sends).
        trace_id_var.set(getattr(self.request, "trace_id", None) or "")
        job_id_var.set(task_id)

    def __call__(self, job_id: str, generation: int = 0) -> Any:
        worker, kind = self.request.hostname or "", kind_for_task(self.name)
        start = self._start(job_id=job_id, generation=generation, worker=worker)
        if start.verdict is not Verdict.STARTED:
            return self._drop(job_id=job_id, generation=generation, start=start)
        job = start.job
        try:
            if start.lost_in_a_row >= settings.CONVEYOR_DELIVERY_LIMIT:
                end, lines = AttemptEnd(Outcome.FAILED, error=_poisoned(start.lost_in_a_row)), []
            else:
                max_lines, max_chars = settings.CONVEYOR_JOB_LOG_MAX_LINES, settings.CONVEYOR_JOB_LOG_MAX_LINE_CHARS
                with job_log_capture(max_lines=max_lines, max_chars=max_chars) as log:
                    end = self._perform(JobRun(job=job, kind=kind))
                lines = log.lines()
        except BaseException:
            # Not an outcome (the worker is stopping): the lock goes, the message is redelivered.
            self._database(lambda: lifecycle.attempt_release(job_id=job_id), f"letting go of job {job_id}")
            raise
        moved = self._database(lambda: end.record(job=job, log=lines), f"storing the outcome of job {job_id}")
        if not moved:
            logger.warning("Job %s was cancelled or taken over while attempt %d ran; the job keeps its state",
                           job_id, job.attempts)
        if end.outcome == Outcome.FAILED:
            raise Reject(end.error, requeue=False)  # into the dead queue, for an operator to re-drive
        return end.delivery_result()

    def _start(self, *, job_id: str, generation: int, worker: str) -> lifecycle.Start:
        """The fence and the start. A message RabbitMQ delivers again because its worker died can come a moment
        before PostgreSQL has closed that worker's session: then the job still looks held, and the start is
        tried again for up to TAKEOVER_WAIT_SECONDS before the message is taken for a duplicate."""
        redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
        deadline = time.monotonic() + TAKEOVER_WAIT_SECONDS
        while True:
            start = self._database(
                lambda: lifecycle.attempt_start(job_id=job_id, generation=generation, worker=worker),
                f"starting job {job_id}",
            )
            if start.verdict is not Verdict.RUNNING_ELSEWHERE or not redelivered or time.monotonic() > deadline:
                return start
            time.sleep(TAKEOVER_POLL_SECONDS)

    def _perform(self, run: JobRun) -> AttemptEnd:
        """Run the kind's function once; its outcome, with the error and traceback a person reads."""
        kind = run.kind
        soft = kind.soft_time_limit or settings.CELERY_TASK_SOFT_TIME_LIMIT
        hard = kind.time_limit or settings.CELERY_TASK_TIME_LIMIT
        try:
            with job_code_watched(job=run.job, soft=soft, hard=hard):
                result = self.run(run)
        except JobCancelled:
            return AttemptEnd(Outcome.CANCELLED)
        except (*CONNECTION_ERRORS, DatabaseUnavailable) as exc:
            # PostgreSQL went away under the job's own code: not the job's fault, so no retry is spent.
            return AttemptEnd(Outcome.RETRYING, error=f"PostgreSQL was unreachable: {_describe(exc)}",
                              traceback=traceback.format_exc(), delay=settings.CONVEYOR_WORKER_DB_RETRY_SECONDS,
                              spends_retry=False)
        except kind.retry.transient as exc:
            return _retry_or_give_up(job=run.job, policy=kind.retry, exc=exc)
        except SoftTimeLimitExceeded:
            return _failure(f"The job ran longer than its time limit of {soft} seconds.")
        except Exception as exc:
            return _failure(_describe(exc))
        try:
            result_json = _result_json(result)
        except ValueError as exc:
            return _failure(str(exc), with_traceback=False)
        return AttemptEnd(Outcome.SUCCEEDED, result=result, result_json=result_json)

    def _database(self, operation: Callable[[], T], what: str) -> T:
        """`operation`, waiting for PostgreSQL while it is unreachable; past the wait the message goes back
        to RabbitMQ (requeued, never dead-lettered) to run later."""
        try:
            return database_retried(operation, wait_seconds=settings.CONVEYOR_WORKER_DB_WAIT_SECONDS, what=what)
        except (DatabaseUnavailable, SoftTimeLimitExceeded) as exc:
            logger.warning("%s: the message goes back to RabbitMQ to run later (%s)", what, exc)
            raise Reject(str(exc), requeue=True) from None

    def _drop(self, *, job_id: str, generation: int, start: lifecycle.Start) -> str:
        """Say why the fence refused a delivery (acknowledged, not run); a busy job is dispatched again shortly."""
        if start.verdict is Verdict.BUSY:
            delay = settings.CONVEYOR_JOB_BUSY_RETRY_SECONDS
            self._database(lambda: lifecycle.dispatch_defer(job_id=job_id, generation=generation, seconds=delay),
                           f"deferring job {job_id}")
            logger.info("Job %s: message of dispatch %d not run: %s; dispatched again in %g s",
                        job_id, generation, start.verdict.value, delay)
            return f"Not run: {start.verdict.value}; dispatched again in {delay:g} s."
        logger.info("Job %s: message of dispatch %d dropped: %s (the job is %s at dispatch %d)",
                    job_id, generation, start.verdict.value, start.status or "gone", start.generation)
        return f"Not run: {start.verdict.value}."


@task_postrun.connect
def _delivery_end(sender: Task | None = None, retval: Any = None, **kwargs: Any) -> None:
    """The end of every delivery of a job's message, whatever its outcome (Celery calls a task's after_return
    only for some).

    A delivery that leaves Celery's trace through Reject (a failure, or PostgreSQL out of reach) leaves the
    exception, whose traceback holds the trace's own frame, in that frame: a reference cycle, which only the
    garbage collector's rare full collections free, holding Celery's two copies of the traceback (about 300 KB
    each). Dropping the traceback here breaks the cycle, so they go as the delivery ends.
    """
    if not isinstance(sender, JobTask):
        return
    trace_id_var.set("")
    job_id_var.set("")
    if isinstance(retval, BaseException):
        retval.__traceback__ = None


def _retry_or_give_up(*, job: Job, policy: RetryPolicy, exc: BaseException) -> AttemptEnd:
    """Called while `exc` is handled: the job retries after its backoff, or fails once its retries are spent."""
    if job.retries >= policy.max_retries:
        return _failure(f"Gave up after {job.retries + 1} attempts. Last error: {_describe(exc)}")
    delay = policy.backoff(retries=job.retries, retry_after=getattr(exc, "retry_after", None))
    error = _describe(exc)
    logger.info("Job %s retries in %g s: %s", job.id, delay, error)
    return AttemptEnd(Outcome.RETRYING, error=error, traceback=traceback.format_exc(), delay=delay)


def _failure(error: str, *, with_traceback: bool = True) -> AttemptEnd:
    """Called while the error is handled (for its traceback): the job fails."""
    return AttemptEnd(Outcome.FAILED, error=error, traceback=traceback.format_exc() if with_traceback else "")


def _poisoned(lost: int) -> str:
    return (
        f"The worker running this job died {lost} times (killed, out of memory, or stopped at its hard time "
        "limit); its message was dead-lettered instead of being run again."
    )


def _result_json(result: Any) -> str:
    """The result as JSON text, or ValueError saying what to change."""
    try:
        text = json.dumps(result, cls=DjangoJSONEncoder)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"The job's result cannot be stored as JSON ({exc}); return dicts, lists, strings and "
                         "numbers.") from None
    limit = settings.CONVEYOR_JOB_RESULT_MAX_BYTES
    if len(text.encode()) > limit:
        raise ValueError(f"The job's result is {len(text.encode()):,} bytes of JSON; the limit is {limit:,} bytes "
                         "(CONVEYOR_JOB_RESULT_MAX_BYTES). Return a summary, and store large output in a file.")
    if "\\u0000" in text:
        raise ValueError("The job's result contains a NUL character (\\u0000), which PostgreSQL cannot store.")
    return text


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
