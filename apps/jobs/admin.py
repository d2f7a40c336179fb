"""The admin as the operators' job console: find jobs fast, see why they failed and what they logged, act.

Actions go through the same services as the API; the dashboard reads jobs from PostgreSQL and
queues and workers from RabbitMQ and Celery.
"""
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from apps.jobs import lifecycle, selectors, services, tallies
from apps.jobs.errors import ActionForbidden, ActionNotAllowed, UnknownKind
from apps.jobs.models import ApiToken, Job
from apps.jobs.presenters import json_pretty, seconds_text
from apps.jobs.probes import queues_depth, workers_active
from apps.jobs.registry import kind_get, kinds_all

admin.site.site_header = "Conveyor operations"
admin.site.site_title = "Conveyor"

STATUS_COLOURS = {
    Job.Status.QUEUED: "#5b6b84",
    Job.Status.SCHEDULED: "#6b46c1",
    Job.Status.RUNNING: "#1f6feb",
    Job.Status.RETRYING: "#b7791f",
    Job.Status.SUCCEEDED: "#2f855a",
    Job.Status.FAILED: "#c53030",
    Job.Status.CANCELLED: "#718096",
}


def flower_task_url(*, task_id: str) -> str:
    """The task's page in Flower, under Flower's --url_prefix (FLOWER_URL_PREFIX)."""
    prefix = settings.FLOWER_URL_PREFIX.strip("/")
    return f"{settings.CONVEYOR_FLOWER_URL.rstrip('/')}/{prefix + '/' if prefix else ''}task/{task_id}"


class CappedCountPaginator(Paginator):
    """Counts at most CONVEYOR_ADMIN_COUNT_LIMIT matches, so a page of the newest jobs stays fast."""

    @cached_property
    def count(self) -> int:
        return self.object_list[: settings.CONVEYOR_ADMIN_COUNT_LIMIT].count()


class KindFilter(admin.SimpleListFilter):
    # The registry knows the kinds: no SELECT DISTINCT over millions of jobs.
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [(kind.name, kind.name) for kind in kinds_all()]

    def queryset(self, request, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(kind=self.value()) if self.value() else queryset


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        names = sorted({*settings.CONVEYOR_QUEUES, *(kind.queue for kind in kinds_all())})
        return [(name, name) for name in names]

    def queryset(self, request, queryset: QuerySet[Job]) -> QuerySet[Job]:
        return queryset.filter(queue=self.value()) if self.value() else queryset


def _act(request: HttpRequest, jobs: QuerySet[Job], action, verb: str) -> None:
    """Each selected job's action as `request.user`, so each is checked and recorded in the admin log."""
    limit = settings.CONVEYOR_ADMIN_ACTION_LIMIT
    selected = list(jobs[: limit + 1])
    if len(selected) > limit:
        messages.error(request, f"One action takes at most {limit} jobs (CONVEYOR_ADMIN_ACTION_LIMIT); "
                                "filter the list or select fewer.")
        return
    done = 0
    for job in selected:
        try:
            action(job=job, by=request.user)
            done += 1
        except (ActionForbidden, ActionNotAllowed) as exc:
            messages.warning(request, f"{job.id}: {exc}")
    if done:
        messages.success(request, f"{verb} {done} job(s).")


@admin.action(description=f"Retry selected jobs ({', '.join(lifecycle.RETRY.sources)})", permissions=["change"])
def retry_jobs(modeladmin, request, queryset) -> None:
    _act(request, queryset, services.job_retry, "Retried")


@admin.action(description="Cancel selected jobs ({}, or running and interruptible)".format(
    ", ".join(status for status in lifecycle.CANCEL.sources if status != Job.Status.RUNNING)), permissions=["change"])
def cancel_jobs(modeladmin, request, queryset) -> None:
    _act(request, queryset, services.job_cancel, "Cancelled")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "short_id", "kind", "status_badge", "attempts", "progress_bar", "queue", "submitted_by", "created_at",
        "duration",
    ]
    list_filter = ["status", KindFilter, QueueFilter, "created_at"]
    # Sorting by another column would sort millions of rows; the newest-first index serves this one.
    sortable_by = ["created_at"]
    ordering = ["-created_at", "-id"]
    search_fields = ["id"]  # shows the search box; get_search_results does the searching
    search_help_text = (
        "A job id, key=value inside params or a @task's keyword arguments (e.g. seconds=2), an idempotency key, "
        "a trace id (X-Request-ID), or words from params or the error."
    )
    list_select_related = ["submitted_by"]
    list_per_page = 50
    paginator = CappedCountPaginator
    show_full_result_count = False
    # Facet counts would run one COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    actions = [retry_jobs, cancel_jobs]
    change_form_template = "admin/jobs/job/change_form.html"
    change_list_template = "admin/jobs/job/change_list.html"
    fieldsets = [
        (None, {"fields": [
            "id", "kind", "status_badge", "progress_bar", "progress_message", "queue", "attempts", "submitted_by",
            "idempotency_key", "trace", "created_at", "run_after", "due_at", "published_at", "generation",
            "started_at", "finished_at", "duration", "elsewhere",
        ]}),
        ("Input and outcome", {"fields": ["params_pretty", "result_pretty", "error_text", "traceback_text"]}),
        ("Timeline", {"fields": ["timeline"]}),
        ("Log", {"fields": ["log_lines"]}),
    ]
    readonly_fields = [
        "id", "kind", "status_badge", "progress_bar", "progress_message", "queue", "attempts", "submitted_by",
        "idempotency_key", "trace", "created_at", "run_after", "due_at", "published_at", "generation", "started_at",
        "finished_at", "duration", "elsewhere", "params_pretty", "result_pretty", "error_text", "traceback_text",
        "timeline", "log_lines",
    ]

    def has_add_permission(self, request) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        return selectors.jobs_search(jobs=queryset, term=search_term), False

    def get_object(self, request, object_id, from_field=None):
        job = super().get_object(request, object_id, from_field)
        if job is not None:
            job.attempt_list = selectors.job_attempts(job=job)
        return job

    def changelist_view(self, request, extra_context=None):
        # An action this user is not offered (retry and cancel need the permission to change jobs) is refused
        # outright, rather than taken for "no action selected".
        if request.method == "POST" and request.POST.get("action", "") not in {"", *self.get_actions(request)}:
            raise PermissionDenied("You may view jobs but not act on them.")
        return super().changelist_view(request, {**(extra_context or {}), "title": "Jobs",
                                                 "can_act": self.has_change_permission(request)})

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Every field is the worker's or the submitter's fact: the page shows them, never saves them. Its
        # buttons are the actions the job's state allows now and this user may take (selectors.job_actions_for).
        job = self.get_object(request, object_id) if object_id else None
        actions = selectors.job_actions_for(user=request.user, job=job, kind=_kind(job)) if job is not None else []
        extra_context = {**(extra_context or {}), "title": "Job", "show_save": False, "show_save_and_continue": False,
                         "show_save_and_add_another": False, "show_delete": False, "job_actions": actions}
        return super().changeform_view(request, object_id, form_url, extra_context)

    # --- columns and fields ---

    @admin.display(description="job")
    def short_id(self, job: Job) -> str:
        return str(job.id)[:8]

    @admin.display(description="status")
    def status_badge(self, job: Job) -> str:
        badge = format_html(
            '<span class="job-status" style="background:{};color:#fff;padding:1px 7px;border-radius:9px">{}</span>',
            STATUS_COLOURS.get(job.status, "#5b6b84"), job.get_status_display(),
        )
        if job.status == Job.Status.SCHEDULED and job.run_after is not None:
            when = f"{timezone.localtime(job.run_after):%Y-%m-%d %H:%M:%S %Z}"
            return format_html('{} <small class="job-run-after">for {}</small>', badge, when)
        return badge

    @admin.display(description="progress")
    def progress_bar(self, job: Job) -> str:
        return format_html(
            '<progress max="100" value="{}" style="width:7em">{}%</progress> {}%', job.progress, job.progress,
            job.progress,
        )

    @admin.display(description="trace id")
    def trace(self, job: Job) -> str:
        if not job.trace_id:
            return "—"
        url = f"{reverse('admin:jobs_job_changelist')}?{urlencode({'q': job.trace_id})}"
        return format_html('<code>{}</code> · <a href="{}">every job of this request</a>', job.trace_id, url)

    @admin.display(description="duration")
    def duration(self, job: Job) -> str:
        if job.started_at is None or job.finished_at is None:
            return "—"
        return seconds_text((job.finished_at - job.started_at).total_seconds())

    @admin.display(description="params")
    def params_pretty(self, job: Job) -> str:
        return format_html("<pre>{}</pre>", json_pretty(job.params))

    @admin.display(description="result")
    def result_pretty(self, job: Job) -> str:
        last = _last_attempt(job)
        if last is None or last.outcome != last.Outcome.SUCCEEDED:
            return "—"
        return format_html("<pre>{}</pre>", json_pretty(last.result))

    @admin.display(description="error")
    def error_text(self, job: Job) -> str:
        return format_html("<pre>{}</pre>", job.error) if job.error else "—"

    @admin.display(description="traceback")
    def traceback_text(self, job: Job) -> str:
        last = _last_attempt(job)
        return format_html("<pre>{}</pre>", last.traceback) if last is not None and last.traceback else "—"

    @admin.display(description="timeline")
    def timeline(self, job: Job) -> str:
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((f"{event['at']:%Y-%m-%d %H:%M:%S.%f}"[:-3], event["event"], event["detail"])
             for event in selectors.job_timeline(job=job)),
        )
        return format_html('<table class="job-timeline"><tbody>{}</tbody></table>', rows)

    @admin.display(description="log lines")
    def log_lines(self, job: Job) -> str:
        lines = [(attempt.number, line) for attempt in _attempts(job) for line in attempt.log]
        if not lines:
            return "—"
        body = format_html_join(
            "\n", "#{} {} {} {}: {}",
            ((number, line["time"], line["level"], line["logger"], line["message"]) for number, line in lines),
        )
        return format_html('<pre class="job-log">{}</pre>', body)

    @admin.display(description="see also")
    def elsewhere(self, job: Job) -> str:
        links = [
            ("Job page", reverse("jobs:detail", args=[job.id])),
            ("Task in Flower", flower_task_url(task_id=str(job.id))),
        ]
        return format_html_join(" · ", '<a href="{}">{}</a>', ((url, label) for label, url in links))

    # --- pages and buttons ---

    def get_urls(self):
        own = [
            path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="jobs_job_dashboard"),
            path("redrive/", self.admin_site.admin_view(self.redrive_view), name="jobs_job_redrive"),
            path("<uuid:job_id>/retry/", self.admin_site.admin_view(self.retry_view), name="jobs_job_retry"),
            path("<uuid:job_id>/cancel/", self.admin_site.admin_view(self.cancel_view), name="jobs_job_cancel"),
        ]
        return own + super().get_urls()

    def retry_view(self, request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
        return self._job_button(request, job_id, services.job_retry, "Retried")

    def cancel_view(self, request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
        return self._job_button(request, job_id, services.job_cancel, "Cancelled")

    def _job_button(self, request: HttpRequest, job_id: uuid.UUID, action, verb: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse("Use the button on the job's page.", status=405)
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied("Acting on jobs needs the permission to change jobs.")
        job = self.get_queryset(request).filter(id=job_id).first()
        if job is None:
            raise Http404(f"No job {job_id}.")
        try:
            action(job=job, by=request.user)
        except ActionForbidden as exc:
            raise PermissionDenied(str(exc)) from None
        except ActionNotAllowed as exc:
            messages.warning(request, f"{job.id}: {exc}")
        else:
            messages.success(request, f"{verb} 1 job(s).")
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job_id]))

    def redrive_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse("Use the re-drive button.", status=405)
        if not self.has_change_permission(request):
            raise PermissionDenied("Re-driving the dead queue needs the permission to change jobs.")
        count = services.dead_letters_redrive(by=request.user)
        messages.success(request, f"Re-drove {count} job(s) from the dead queue; each runs again as a new attempt.")
        return HttpResponseRedirect(request.POST.get("next") or reverse("admin:jobs_job_changelist"))

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Jobs by status now, finished in the last hour and day, a chart of the last hour, queues and workers:
        all read from the tallies, RabbitMQ and Celery, never counted over the jobs."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied("The jobs dashboard needs the permission to view jobs.")
        now = timezone.now()
        live = tallies.tallies_read()
        first, minutes = tallies.tallies_grown_per_minute(since=now - timedelta(days=1), now=now)
        hour_start = now - timedelta(hours=1)
        last_hour = [(minute, grown) for minute, grown in minutes if minute >= hour_start - timedelta(minutes=1)]

        def total(rows: list[tuple[datetime, dict]], name: str) -> int:
            return round(sum(grown[name] for _, grown in rows))

        context = {
            **self.admin_site.each_context(request),
            "title": "Jobs dashboard",
            "opts": self.model._meta,
            "statuses": [(status, round(sum(value for (_, name), value in live.items() if name == f"status:{status}")),
                          STATUS_COLOURS[status]) for status in Job.Status],
            "finished": [(label, total(last_hour, name), total(minutes, name))
                         for label, name in (("submitted", "submitted"), ("succeeded", "finished:succeeded"),
                                             ("failed", "finished:failed"), ("cancelled", "finished:cancelled"),
                                             ("reconciled (message lost, dispatched again)", "reconciled"))],
            "counted_since": first,
            "queues": queues_depth(),
            "workers": workers_active(),
            "chart": throughput_chart(rows=last_hour, now=now),
        }
        return TemplateResponse(request, "admin/jobs/dashboard.html", context)


def throughput_chart(*, rows: list[tuple[datetime, dict]], now: datetime, minutes: int = 60) -> dict:
    """Bars of jobs finished per minute (failed in red) and a failure-rate line, as SVG coordinates."""
    width, height, bar = 600, 120, 10
    by_minute = {minute.replace(second=0, microsecond=0): grown for minute, grown in rows}
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    series = []
    for index in range(minutes):
        minute = start + timedelta(minutes=index)
        grown = by_minute.get(minute, {})
        series.append((minute, round(grown.get("finished:succeeded", 0)), round(grown.get("finished:failed", 0))))
    peak = max((ok + failed for _, ok, failed in series), default=0) or 1
    bars, rate_points = [], []
    for index, (minute, ok, failed) in enumerate(series):
        x = index * bar
        ok_height, failed_height = height * ok / peak, height * failed / peak
        bars.append({
            "x": x, "ok_y": height - ok_height - failed_height, "ok_height": ok_height,
            "failed_y": height - failed_height, "failed_height": failed_height,
            "label": f"{minute:%H:%M} {ok} succeeded, {failed} failed",
        })
        if ok + failed:
            rate_points.append({"x": x + bar / 2, "y": height - height * failed / (ok + failed)})
    total_ok = sum(ok for _, ok, _ in series)
    total_failed = sum(failed for _, _, failed in series)
    return {
        "width": width, "height": height, "bar_width": bar - 2, "bars": bars, "rate_points": rate_points,
        "rate_line": " ".join(f"{point['x']:.0f},{point['y']:.1f}" for point in rate_points),
        "peak": peak, "succeeded": total_ok, "failed": total_failed,
        "failure_rate": f"{100 * total_failed / (total_ok + total_failed):.1f}" if total_ok + total_failed else "0.0",
        "start": start, "end": now,
    }


def _attempts(job: Job) -> list:
    attempts = getattr(job, "attempt_list", None)
    return attempts if attempts is not None else selectors.job_attempts(job=job)


def _last_attempt(job: Job):
    attempts = _attempts(job)
    return attempts[-1] if attempts else None


def _kind(job: Job):
    try:
        return kind_get(job.kind)
    except UnknownKind:
        return None


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "created_at"]
    readonly_fields = ["user", "key_hash", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False
