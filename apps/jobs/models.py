"""Job records, their attempts, and API tokens.

Who writes what ("one writer per fact"); every change of state is a statement of apps/jobs/lifecycle.py:
- The web (submit, operator actions) writes what was asked: kind, params, queue, idempotency key, run_after,
  trace id, submitter, created_at; operator actions move a job back to `queued` or to `cancelled`.
- The outbox relay (apps/jobs/relay.py), the one publisher, writes each dispatch: the generation
  its message carries and published_at.
- The worker writes what happened: status while running, attempts, retries, progress, error, when
  the next attempt is due, started/finished times, and one JobAttempt row per attempt with its
  outcome, result value, error, traceback and the log lines the job emitted during it.
Pages, the API and the admin read these rows; nothing Celery stores or cleans up holds a job's outcome.
"""
import hashlib
import uuid

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q


def submitter_deleted(collector, field, sub_objs, using) -> None:
    """on_delete of a job's submitter: the job stays, with no submitter, and its idempotency key is forgotten.

    Jobs of no submitter (a schedule's, a @task's) share one space of keys (job_idempotency_key_system); a deleted
    user's keys must not take their place there, and nobody can send them again anyway."""
    # The key first: the rows are updated field by field, in this order, and a job of no submitter that still had
    # the key would break the constraint.
    collector.add_field_update(field.model._meta.get_field("idempotency_key"), None, sub_objs)
    collector.add_field_update(field, None, sub_objs)


submitter_deleted.lazy_sub_objs = True  # as SET_NULL: the rows are updated, never loaded


class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        # Deferred: waits for its run_after time in the outbox, then runs like a queued job.
        SCHEDULED = "scheduled"
        RUNNING = "running"
        RETRYING = "retrying"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    # States that wait for a message: the outbox publishes one when it falls due, a worker starts the job from
    # it (the partial indexes below and migration 0005's NOTIFY trigger name them too).
    WAITING = (Status.QUEUED, Status.SCHEDULED, Status.RETRYING)

    # Also the Celery task id of every message of the job.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=100)
    params = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=100)
    # NULL, not "", for "no key": the per-user unique constraint must ignore jobs without one.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    trace_id = models.CharField(max_length=64, blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=submitter_deleted, related_name="jobs"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The earliest time the job may start, as asked (`run_after`); a job submitted with one in the future is
    # scheduled, due in the outbox at that time. Kept after it ran, as the record of what was asked.
    run_after = models.DateTimeField(null=True, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    # The outbox: a job whose state calls for a message (Job.WAITING) and whose message is not
    # published yet is due for one at due_at; the relay publishes it then. See apps/jobs/lifecycle.py.
    due_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    # The number of the job's latest dispatch, carried in its message: a worker runs only a message
    # of the current generation (the fence), so a message left from an earlier dispatch never runs.
    generation = models.PositiveIntegerField(default=0)
    # Counts JobAttempt rows; kept here so lists need no join (both written in one statement).
    attempts = models.PositiveIntegerField(default=0)
    # Automatic retries since the job was submitted or last retried by an operator: the backoff's n.
    retries = models.PositiveIntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["submitted_by", "-created_at"], name="job_owner_recent"),
            # The per-user limit on waiting jobs (apps/jobs/limits.py) counts a user's waiting jobs here, reading at
            # most CONVEYOR_USER_JOBS_WAITING_MAX entries; it names "scheduled" for deferred jobs.
            models.Index(fields=["submitted_by"], name="job_owner_waiting",
                         condition=Q(status__in=["queued", "scheduled", "retrying"])),
            models.Index(fields=["status", "-created_at"], name="job_status_recent"),
            models.Index(fields=["kind", "-created_at"], name="job_kind_recent"),
            # The admin's and pages' newest-first lists, unfiltered or by date, over millions of jobs.
            models.Index(fields=["-created_at", "-id"], name="job_recent"),
            # Retention: finished jobs, oldest first, pruned in batches.
            models.Index(fields=["finished_at"], name="job_finished", condition=Q(finished_at__isnull=False)),
            # The admin's search by a value inside params (`key=value`, JSON containment).
            GinIndex(fields=["params"], opclasses=["jsonb_path_ops"], name="job_params"),
            # The admin's search by idempotency key, whoever submitted the job.
            models.Index(
                fields=["idempotency_key"], name="job_idempotency_key", condition=Q(idempotency_key__isnull=False)
            ),
            # The outbox, by due time: jobs whose next message is not published yet.
            models.Index(
                fields=["due_at"], name="job_outbox",
                condition=Q(published_at__isnull=True, status__in=["queued", "scheduled", "retrying"]),
            ),
            # The reconciler: per queue, jobs whose message was published and has not started them yet...
            models.Index(
                fields=["queue", "published_at"], name="job_published_waiting",
                condition=Q(published_at__isnull=False, status__in=["queued", "scheduled", "retrying"]),
            ),
            # ...and jobs marked running, oldest start first.
            models.Index(fields=["started_at"], name="job_running", condition=Q(status="running")),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["submitted_by", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="job_idempotency_key_per_user",
            ),
            # Jobs of no submitter (schedules, @task code) share one space of keys: the constraint above treats
            # two NULL submitters as distinct, so alone it would let two schedulers record one slot twice.
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=Q(idempotency_key__isnull=False, submitted_by__isnull=True),
                name="job_idempotency_key_system",
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
    # Seconds the next attempt waits after this one failed transiently.
    retry_delay = models.FloatField(null=True, blank=True)
    # What the attempt returned (JSON, at most CONVEYOR_JOB_RESULT_MAX_BYTES), or the traceback it
    # ended with; written by the statement that ends the attempt.
    result = models.JSONField(null=True, blank=True)
    traceback = models.TextField(blank=True)
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


class SubmissionAllowance(models.Model):
    """How much of a user's submission rate is spent, as a token bucket in one row per user (apps/jobs/limits.py):
    the user's bucket is full again at `full_at`. UNLOGGED (migration 0005): no WAL, so taking from it adds no
    disk flush to a submission, and a crash that empties the table only refills every bucket."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="+")
    full_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"submissions of user {self.user_id}: bucket full at {self.full_at:%H:%M:%S}"


class JobTally(models.Model):
    """Counts PostgreSQL keeps as jobs change (the triggers of migration 0004), so /metrics and the dashboard
    read a few hundred rows whatever the number of jobs: the moves of jobs between states, and attempts and
    first starts by how long they took (apps/jobs/tallies.py names them and derives the rest). Each PostgreSQL
    backend adds to its own shard, so workers never wait on each other's counts; a reading sums the shards."""

    kind = models.CharField(max_length=100)  # "" for counts of no kind (jobs reconciled)
    name = models.CharField(max_length=40)
    shard = models.SmallIntegerField()
    value = models.FloatField(default=0)  # how many
    total = models.FloatField(default=0)  # their seconds, for the histograms' sums

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "name", "shard"], name="job_tally_unique")]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}[{self.shard}] = {self.value:g}"


class JobTallyMinute(models.Model):
    """The tallies that only grow, summed over kinds at the start of each minute by the lifeline
    (apps/jobs/reconciler.py): the dashboard's last hour and day are differences between two of these, never a
    count over the jobs."""

    minute = models.DateTimeField()
    name = models.CharField(max_length=40)
    value = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["minute", "name"], name="job_tally_minute_unique")]

    def __str__(self) -> str:
        return f"{self.minute:%H:%M} {self.name} = {self.value:g}"
