"""Job pages: list, pick a kind, submit its form, watch one job; retry and cancel buttons."""
import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from apps.jobs import selectors, services
from apps.jobs.errors import (
    ActionForbidden,
    ActionNotAllowed,
    IdempotencyKeyReused,
    JobParamsInvalid,
    RunAfterInvalid,
    SubmissionRefused,
    UnknownKind,
)
from apps.jobs.forms import RunAfterForm
from apps.jobs.models import Job
from apps.jobs.presenters import attempt_rows, job_json, json_pretty
from apps.jobs.registry import JobKind, kind_find, kind_get, kinds_all


def _kind_or_404(name: str) -> JobKind:
    """A kind users may submit from the pages (not a @task function's)."""
    try:
        kind = kind_get(name)
    except UnknownKind as exc:
        raise Http404(str(exc)) from None
    if not kind.user_submittable:
        raise Http404(f"Jobs of kind {name} are submitted by code and schedules, not from this page.")
    return kind


def _job_or_404(request: HttpRequest, job_id: uuid.UUID) -> Job:
    job = selectors.jobs_visible_to(user=request.user).filter(id=job_id).first()
    if job is None:
        raise Http404("No such job.")
    return job


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    status, kind = request.GET.get("status", ""), request.GET.get("kind", "")
    jobs = selectors.jobs_filtered(user=request.user, status=status, kind=kind)
    try:
        number = min(max(1, int(request.GET.get("page", 1))), settings.CONVEYOR_MAX_PAGE)
    except ValueError:
        number = 1
    page = selectors.jobs_page(jobs=jobs, number=number, size=settings.CONVEYOR_PAGE_SIZE)
    context = {"page": page, "statuses": Job.Status, "kinds": kinds_all(), "status": status, "kind": kind}
    return render(request, "jobs/list.html", context)


@login_required
def job_kind_pick(request: HttpRequest) -> HttpResponse:
    return render(request, "jobs/new.html", {"kinds": [kind for kind in kinds_all() if kind.user_submittable]})


@login_required
def job_new(request: HttpRequest, kind: str) -> HttpResponse:
    job_kind = _kind_or_404(kind)
    form, when, refused = job_kind.form_build(user=request.user), RunAfterForm(), None
    if request.method == "POST":
        when = RunAfterForm(request.POST)
        if not when.is_valid():
            # The kind's own errors show too, so everything to change is said at once.
            form = job_kind.form_build(user=request.user, data=request.POST, files=request.FILES)
            form.is_valid()
            return render(request, "jobs/form.html", {"kind": job_kind, "form": form, "when": when})
        try:
            job, _ = services.job_submit(
                kind=kind,
                params=request.POST,
                files=request.FILES,
                submitted_by=request.user,
                trace_id=request.request_id,
                run_after=when.cleaned_data["run_after"],
            )
        except JobParamsInvalid as exc:
            form = exc.form
        except RunAfterInvalid as exc:
            when.add_error("run_after", str(exc))
        except IdempotencyKeyReused as exc:
            messages.error(request, str(exc))
        except SubmissionRefused as exc:
            # The API's message, above the user's input as they sent it.
            form = job_kind.form_build(user=request.user, data=request.POST, files=request.FILES)
            form.add_error(None, str(exc))
            refused = exc
        else:
            messages.success(request, "Job scheduled." if job.status == Job.Status.SCHEDULED else "Job submitted.")
            return redirect("jobs:detail", job_id=job.id)
    response = render(request, "jobs/form.html", {"kind": job_kind, "form": form, "when": when},
                      status=429 if refused else 200)
    if refused is not None and refused.retry_after:
        response["Retry-After"] = str(refused.retry_after)
    return response


@login_required
def job_detail(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    job = _job_or_404(request, job_id)
    attempts = selectors.job_attempts(job=job)
    data = job_json(job=job, viewer=request.user, attempts=attempts)
    context = {
        "job": job, "data": data, "kind": kind_find(job.kind), "attempts": attempt_rows(job=job, attempts=attempts),
        "params": json_pretty(job.params), "result": json_pretty(data["result"]) if data["result"] is not None else "",
    }
    return render(request, "jobs/detail.html", context)


@login_required
@require_POST
def job_retry(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    return _job_action(request, job_id, services.job_retry, "Job queued again.")


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    return _job_action(request, job_id, services.job_cancel, "Job cancelled.")


def _job_action(request: HttpRequest, job_id: uuid.UUID, action, done: str) -> HttpResponse:
    job = _job_or_404(request, job_id)
    try:
        action(job=job, by=request.user)
    except ActionForbidden as exc:
        raise PermissionDenied(str(exc)) from None
    except ActionNotAllowed as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, done)
    return redirect("jobs:detail", job_id=job.id)
