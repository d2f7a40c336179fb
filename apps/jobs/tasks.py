"""The job task class every kind's Celery task uses: it owns the life of one attempt.

A kind's task function receives a JobRun (params, progress) and returns a small JSON result.
The class turns what happens into job state: success, a transient error retried with backoff
through RabbitMQ's delayed delivery, or a failure whose message is dead-lettered.
"""
import logging
import traceback
from dataclasses import dataclass
from typing import Any

from celery import Task, states
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError

from apps.jobs import services
from apps.jobs.errors import JobCancelled
from apps.jobs.logs import job_log_capture
from apps.jobs.models import Job
from apps.jobs.registry import JobKind, kind_for_task
from apps.ops.log import job_id_var, trace_id_var
from config import broker

logger = logging.getLogger(__name__)


class PoisonMessage(Exception):
    """The job's message was delivered too often without finishing: its worker keeps dying."""


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
        """Report progress (0-100); in an interruptible kind, raises JobCancelled if cancelled."""
        try:
            services.job_progress_report(job=self.job, percent=int(percent), message=message)
        except JobCancelled:
            if self.kind.interruptible:
                raise


def message_deliveries(request: Any) -> int:
    """How many times RabbitMQ delivered this message before (quorum queues' x-delivery-count)."""
    return int(vars(request).get("x-delivery-count") or 0)


class JobTask(Task):
    # Celery would otherwise retry by re-running inside the worker; our retries wait in RabbitMQ.
    autoretry_for = ()
    typing = False
    # "Running" is a fact of the Job (status, started_at, one JobAttempt per run), written once by
    # job_start. Celery's STARTED result would write it a second time, before this class can tell
    # a duplicate message of a finished job, and overwrite that job's stored outcome.
    track_started = False
    # A success or a retry is written with the job's own row (services.job_succeed, job_retry_later),
    # in one statement; Celery's backend stores failures (with their tracebacks) and cancellations.
    ignore_result = True
    store_errors_even_if_ignored = True

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        # From here to after_return, every log line (Celery's "succeeded"/"raised" lines too)
        # names the job and the request that submitted it (the trace_id header job_publish sends).
        trace_id_var.set(getattr(self.request, "trace_id", None) or "")
        job_id_var.set(task_id)

    def after_return(self, *args: Any, **kwargs: Any) -> None:
        trace_id_var.set("")
        job_id_var.set("")

    def __call__(self, job_id: str) -> Any:
        try:
            job = services.job_start(job_id=job_id, worker=self.request.hostname or "")
        except DatabaseError:
            logger.warning("PostgreSQL is unreachable; job %s goes back to RabbitMQ to run later", job_id)
            # Nothing can be recorded, so the job must neither fail nor be dead-lettered, and
            # requeueing at once would spin and count as a crashed delivery.
            self._publish_again(job_id=job_id, countdown=settings.CONVEYOR_WORKER_DB_RETRY_SECONDS,
                                retries=self.request.retries)
            raise Ignore() from None
        if job is None:
            # A duplicate message of a finished or cancelled job: acknowledge it, store nothing.
            raise Ignore()
        max_lines, max_chars = settings.CONVEYOR_JOB_LOG_MAX_LINES, settings.CONVEYOR_JOB_LOG_MAX_LINE_CHARS
        with job_log_capture(max_lines=max_lines, max_chars=max_chars) as log:
            try:
                return self._attempt(job)
            finally:
                # One write per attempt, and none when the job logged nothing.
                if log:
                    services.job_attempt_log_save(job=job, lines=log.lines())

    def _attempt(self, job: Job) -> Any:
        kind = kind_for_task(self.name)
        job_id = str(job.id)
        deliveries = message_deliveries(self.request)
        if deliveries >= settings.CONVEYOR_DELIVERY_LIMIT:
            error = (
                f"The worker running this job died {deliveries} times (killed or out of memory); "
                "its message was dead-lettered instead of being run again."
            )
            services.job_fail(job=job, error=error)
            raise PoisonMessage(error)
        try:
            result = self.run(JobRun(job=job, kind=kind))
        except JobCancelled:
            services.job_cancelled_while_running(job=job)
            self.backend.mark_as_revoked(job_id, "cancelled", request=self.request)
            raise Ignore() from None
        except kind.retry.transient as exc:
            self._retry_or_fail(job=job, kind=kind, exc=exc)
        except SoftTimeLimitExceeded as exc:
            limit = kind.soft_time_limit or settings.CELERY_TASK_SOFT_TIME_LIMIT
            services.job_fail(job=job, error=f"The job ran longer than its time limit of {limit} seconds.")
            raise exc
        except Exception as exc:
            services.job_fail(job=job, error=_describe(exc))
            raise
        services.job_succeed(job=job, task_result=self.backend.task_result_row(
            job_id, result, states.SUCCESS, request=self.request
        ))
        return result

    def _publish_again(self, *, job_id: str, countdown: int, retries: int) -> None:
        """Publish this job's message again, to wait `countdown` seconds in RabbitMQ (delayed delivery).

        Confirmed before the caller raises Ignore, which acknowledges the message being run.
        """
        kind = kind_for_task(self.name)
        self.apply_async(
            kwargs={"job_id": job_id},
            task_id=job_id,
            queue=broker.job_queue(kind.queue),
            countdown=countdown,
            retries=retries,
            headers={"trace_id": getattr(self.request, "trace_id", "")},
            soft_time_limit=kind.soft_time_limit,
            time_limit=kind.time_limit,
        )

    def _retry_or_fail(self, *, job: Job, kind: JobKind, exc: BaseException) -> None:
        """Called while `exc` is being handled: fail the job, or record the retry, then publish it.

        Not Celery's Task.retry, which publishes the next attempt first and stores this one's RETRY
        result after: with a short delay the next attempt could finish first, and the late RETRY
        would overwrite its outcome.
        """
        retries = self.request.retries
        if retries >= kind.retry.max_retries:
            services.job_fail(job=job, error=f"Gave up after {retries + 1} attempts. Last error: {_describe(exc)}")
            raise exc
        delay = services.backoff_delay(
            policy=kind.retry, retries=retries, retry_after=getattr(exc, "retry_after", None)
        )
        job_id = str(job.id)
        result = self.backend.task_result_row(
            job_id, self.backend.encode_result(exc, states.RETRY), states.RETRY, traceback=traceback.format_exc(),
            request=self.request,
        )
        services.job_retry_later(job=job, error=_describe(exc), delay=delay, task_result=result)
        self._publish_again(job_id=job_id, countdown=delay, retries=retries + 1)
        logger.info("Job %s retries in %d s: %s", job_id, delay, _describe(exc))
        raise Ignore()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
