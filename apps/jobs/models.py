"""Job records, their attempts, and API tokens.

Who writes what ("one writer per fact"):
- The web (submit, operator actions) writes what was asked: kind, params, queue, idempotency key,
  trace id, submitter, created_at; the outbox relay (apps/jobs/relay.py), which publishes every
  job, writes published_at; operator actions move a job back to `queued` or to `cancelled`.
- The worker writes what happened: status while running, attempts, progress, error message,
  next retry time, started/finished times, and one JobAttempt row per attempt with the log lines
  the job emitted during it.
- django-celery-results' TaskResult (written by Celery's result backend in the worker) holds
  the task's return value (the job's result summary) and the traceback of its latest attempt.
  Job keeps no copy of either; pages and the API read them from TaskResult.
"""
import hashlib
import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q


class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        RETRYING = "retrying"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    # Also the Celery task id, so TaskResult.task_id == str(job.id).
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=100)
    params = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=100)
    # NULL, not "", for "no key": the per-user unique constraint must ignore jobs without one.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    trace_id = models.CharField(max_length=64, blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # Counts JobAttempt rows; kept here so lists need no join (both written in one transaction).
    attempts = models.PositiveIntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["submitted_by", "-created_at"], name="job_owner_recent"),
            models.Index(fields=["status", "-created_at"], name="job_status_recent"),
            models.Index(fields=["kind", "-created_at"], name="job_kind_recent"),
            # The admin's and pages' newest-first lists, unfiltered or by date, over millions of jobs.
            models.Index(fields=["-created_at", "-id"], name="job_recent"),
            # Throughput and failure rate over the last hour (dashboard), finished jobs only.
            models.Index(fields=["finished_at"], name="job_finished", condition=Q(finished_at__isnull=False)),
            # The admin's search by a value inside params (`key=value`, JSON containment).
            GinIndex(fields=["params"], opclasses=["jsonb_path_ops"], name="job_params"),
            # The admin's search by idempotency key, whoever submitted the job.
            models.Index(
                fields=["idempotency_key"], name="job_idempotency_key", condition=Q(idempotency_key__isnull=False)
            ),
            # The outbox: jobs recorded but not yet taken by RabbitMQ.
            models.Index(
                fields=["created_at"], name="job_outbox", condition=Q(published_at__isnull=True, status="queued")
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["submitted_by", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="job_idempotency_key_per_user",
            ),
            models.CheckConstraint(condition=Q(progress__lte=100), name="job_progress_at_most_100"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED


class JobAttempt(models.Model):
    """One run of a job by a worker: when, where, how it ended and how long it waited after."""

    class Outcome(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        RETRYING = "retrying"
        FAILED = "failed"
        CANCELLED = "cancelled"
        # The worker died during the attempt; the message was delivered again.
        LOST = "lost"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveIntegerField()
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error = models.TextField(blank=True)
    # Seconds the next attempt waits in RabbitMQ after this one failed transiently.
    retry_delay = models.FloatField(null=True, blank=True)
    # What the job logged during this attempt: [{"time", "level", "logger", "message"}], oldest first,
    # at most CONVEYOR_JOB_LOG_MAX_LINES (+1 marker line saying how many older ones were dropped).
    log = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="job_attempt_number_unique")]

    def __str__(self) -> str:
        return f"{self.job_id} attempt {self.number}"


class ApiToken(models.Model):
    """A bearer token for the JSON API; only the SHA-256 of the token is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"token of {self.user} created {self.created_at:%Y-%m-%d}"

    @staticmethod
    def hash_of(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()
