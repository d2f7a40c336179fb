"""Reads of jobs: what a user may see, search, a job's attempts and timeline, the outbox, API token owners."""
import copy
import json
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.utils import timezone

from apps.jobs import lifecycle
from apps.jobs.models import ApiToken, Job, JobAttempt
from apps.jobs.registry import JobKind


def jobs_visible_to(*, user: AbstractBaseUser) -> QuerySet[Job]:
    """Staff see every job; everyone else sees their own."""
    jobs = Job.objects.all()
    return jobs if user.is_staff else jobs.filter(submitted_by=user)


def job_action_permitted(*, user: AbstractBaseUser, job: Job) -> bool:
    """Whether `user` may act on `job` (retry, cancel): its submitter may; anyone else needs the permission to
    change jobs (operators). A staff user with only the view permission sees every job but acts on none but
    their own. Which actions the job's state allows is lifecycle.job_actions's to say."""
    return (job.submitted_by_id is not None and job.submitted_by_id == user.pk) or user.has_perm("jobs.change_job")


def job_actions_for(*, user: AbstractBaseUser, job: Job, kind: JobKind | None) -> list[str]:
    """The actions `user` can take on `job` now: those its state allows, if the user may act on it at all. Every
    screen (the job's JSON, its page, the admin) draws its buttons from this."""
    return lifecycle.job_actions(job=job, kind=kind) if job_action_permitted(user=user, job=job) else []


def jobs_filtered(*, user: AbstractBaseUser, status: str = "", kind: str = "") -> QuerySet[Job]:
    if "\x00" in status + kind:  # no kind or status holds one (PostgreSQL text cannot), and the query would fail
        return Job.objects.none()
    jobs = jobs_visible_to(user=user)
    if status:
        jobs = jobs.filter(status=status)
    if kind:
        jobs = jobs.filter(kind=kind)
    return jobs


@dataclass(frozen=True)
class JobsPage:
    """One page of a job list, newest first; whether an older page follows is known without a count."""

    jobs: list[Job]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def jobs_page(*, jobs: QuerySet[Job], number: int, size: int) -> JobsPage:
    """Page `number` (from 1) of `size` jobs. One row past the page tells whether another follows:
    counting every match (Paginator) took 134 ms on each view of a list of a million jobs."""
    rows = list(jobs[(number - 1) * size : number * size + 1])
    return JobsPage(jobs=rows[:size], number=number, has_next=len(rows) > size)


def job_attempts(*, job: Job) -> list[JobAttempt]:
    """The job's attempts, oldest first: each one's outcome, result, error, traceback and log."""
    return list(job.attempt_set.order_by("number"))


def jobs_outbox_count() -> int:
    """Jobs due for a message that is not published yet (the outbox's partial index counts them); a scheduled job
    or a retry in its backoff is not due before its time."""
    return Job.objects.filter(status__in=Job.WAITING, published_at__isnull=True, due_at__lte=timezone.now()).count()


# Bearer tokens this process checked lately: key hash -> (good until, on the monotonic clock; user).
# Under load a token is sent with every request, and looking it up (tokens joined with users) was a
# quarter of a submission's time. At most this many are kept (a user row each), and only good ones.
_TOKEN_USERS_MAX = 1000
_token_users: dict[str, tuple[float, AbstractBaseUser]] = {}


def api_token_user(*, token: str) -> AbstractBaseUser | None:
    """The active user who owns `token`, or None.

    A good token is remembered for CONVEYOR_API_TOKEN_CACHE_SECONDS by each web process, so deleting
    it or deactivating its user takes effect within that time; a new token works at once.
    """
    key_hash = ApiToken.hash_of(token)
    now = time.monotonic()
    remembered = _token_users.get(key_hash)
    if remembered is not None and remembered[0] > now:
        # A copy: what one request caches on its user (permissions) is not another's.
        return copy.copy(remembered[1])
    found = ApiToken.objects.select_related("user").filter(key_hash=key_hash).first()
    if found is None or not found.user.is_active:
        _token_users.pop(key_hash, None)
        return None
    if settings.CONVEYOR_API_TOKEN_CACHE_SECONDS > 0:
        if len(_token_users) >= _TOKEN_USERS_MAX:
            _token_users.clear()
        _token_users[key_hash] = (now + settings.CONVEYOR_API_TOKEN_CACHE_SECONDS, found.user)
    return copy.copy(found.user)


def jobs_search(*, jobs: QuerySet[Job], term: str) -> QuerySet[Job]:
    """The admin's search: a job id; `key=value` inside params (or a @task's keyword arguments); else an
    idempotency key, a trace id, or text in params or the error.

    A value after `=` is matched as JSON too (`seconds=2` finds 2 and "2"); id, idempotency key and
    `key=value` use indexes, free text reads every job's params and error.
    """
    term = term.strip()
    if not term:
        return jobs
    try:
        return jobs.filter(id=uuid.UUID(term))
    except ValueError:
        pass
    key, equals, value = term.partition("=")
    if equals and key and not any(character.isspace() for character in key):
        values = [value]
        try:
            values.append(json.loads(value))
        except ValueError:
            pass
        # A @task job's keyword arguments are inside params["kwargs"] (apps/tasks).
        matches = Q()
        for wanted in values:
            matches |= Q(params__contains={key: wanted}) | Q(params__contains={"kwargs": {key: wanted}})
        return jobs.filter(matches)
    return jobs.annotate(params_text=Cast("params", TextField())).filter(
        Q(idempotency_key=term) | Q(trace_id=term) | Q(params_text__icontains=term) | Q(error__icontains=term)
    )


def job_timeline(*, job: Job) -> list[dict]:
    """What happened to the job, oldest first: submitted, published, each attempt, finished."""
    events = [{"at": job.created_at, "event": "submitted", "detail": f"by {job.submitted_by or 'the system'}"}]
    if job.published_at:
        events.append({"at": job.published_at, "event": "published",
                       "detail": f"to queue {job.queue} (dispatch {job.generation})"})
    for attempt in job.attempt_set.all():
        events.append(
            {"at": attempt.started_at, "event": f"attempt {attempt.number} started", "detail": f"on {attempt.worker}"}
        )
        if attempt.finished_at:
            detail = attempt.error or ""
            if attempt.retry_delay is not None:
                detail = f"{detail}; next attempt in {attempt.retry_delay:g} s".lstrip("; ")
            events.append(
                {"at": attempt.finished_at, "event": f"attempt {attempt.number} {attempt.outcome}", "detail": detail}
            )
    events.sort(key=lambda event: event["at"])
    if job.finished_at:
        # Last, whatever the clocks of the hosts that wrote the other rows say.
        events.append({"at": job.finished_at, "event": f"finished: {job.status}", "detail": job.error})
    return events
