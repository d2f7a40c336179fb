"""The job kinds registry: what each kind runs, how its input is validated, where and how it retries."""
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from django import forms

from apps.jobs.errors import TransientJobError, UnknownKind


@dataclass(frozen=True)
class RetryPolicy:
    """Which errors are worth retrying, and how long to wait: full jitter in [0, min(cap, base * 2**n)]."""

    transient: tuple[type[BaseException], ...] = (TransientJobError,)
    max_retries: int = 5
    backoff_base: float = 1.0
    backoff_cap: float = 600.0

    def backoff(self, *, retries: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `retries` + 1: uniform in [0, min(cap, base * 2**retries)], to the
        millisecond (full jitter). A `retry_after` longer than that wins, up to the cap."""
        delay = round(random.uniform(0, min(self.backoff_cap, self.backoff_base * (2**retries))), 3)
        if retry_after is not None and retry_after > delay:
            delay = float(min(self.backoff_cap, math.ceil(retry_after)))
        return delay


@dataclass(frozen=True)
class JobKind:
    name: str
    task: Task
    form: type[forms.Form]
    title: str
    description: str = ""
    queue: str = "default"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Seconds; None means the global CELERY_TASK_SOFT_TIME_LIMIT / CELERY_TASK_TIME_LIMIT.
    soft_time_limit: int | None = None
    time_limit: int | None = None
    # An interruptible kind checks for cancellation each time it reports progress.
    interruptible: bool = False
    # Turns the valid form into the job's JSON params, without side effects. The default keeps the cleaned
    # data and drops uploaded files; a kind that takes a file keeps what identifies it (its content's hash).
    params_from_form: Callable[[forms.Form], dict] | None = None
    # Stores the files of a new job (given the job, not saved yet, and its valid form): called by job_submit
    # only once the job is known to be new, so a repeated submission stores nothing.
    files_save: Callable[[Any, forms.Form], None] | None = None
    # The storage names of the files a job owns, deleted with it when retention prunes it.
    files: Callable[[Any], list[str]] | None = None
    # The form is built with `user=` (the submitter, or None) so it offers and accepts only what
    # that user may use, e.g. their own webhook endpoints.
    form_takes_user: bool = False
    # Kind-specific facts about one job (e.g. each attempt's HTTP response), added to the job's
    # JSON as `details`; `detail_template` shows them (and the result) on the job page.
    details: Callable[[Any], object] | None = None
    detail_template: str = ""
    # Offered to users by the pages and the API. A @task function's kind is not (apps/tasks): its code enqueues
    # it, an operator may schedule or retry it, but a user of the API must not call any function of the project.
    user_submittable: bool = True

    def form_build(self, *, user: Any = None, **kwargs: Any) -> forms.Form:
        """The kind's form, bound when `data` is given; given the user when the kind asks for it."""
        if self.form_takes_user:
            kwargs["user"] = user
        return self.form(**kwargs)


_kinds: dict[str, JobKind] = {}


def kind_register(kind: JobKind) -> JobKind:
    if kind.name in _kinds and _kinds[kind.name] != kind:
        raise ValueError(f"Job kind {kind.name!r} is registered twice.")
    _kinds[kind.name] = kind
    return kind


def kind_get(name: str) -> JobKind:
    try:
        return _kinds[name]
    except KeyError:
        raise UnknownKind(f"Unknown job kind {name!r}. Known kinds: {', '.join(sorted(_kinds))}.") from None


def kind_find(name: str) -> JobKind | None:
    """The kind named `name`, or None where this process does not have it (a @task module it never imported, a
    kind since removed)."""
    return _kinds.get(name)


def kinds_all() -> list[JobKind]:
    return sorted(_kinds.values(), key=lambda kind: kind.name)


def kind_for_task(task_name: str) -> JobKind:
    for kind in _kinds.values():
        if kind.task.name == task_name:
            return kind
    raise UnknownKind(f"No job kind runs task {task_name!r}.")
