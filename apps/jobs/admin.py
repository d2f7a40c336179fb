"""The admin as the operators' job console: find jobs fast, see why they failed and what they logged, act.

Actions go through the same services as the API; the dashboard reads jobs from PostgreSQL and
queues and workers from RabbitMQ and Celery.
"""
import json
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django_celery_results.admin import TaskResultAdmin
from django_celery_results.models import TaskResult

from apps.jobs import selectors, services
from apps.jobs.errors import ActionNotAllowed
from apps.jobs.models import ApiToken, Job
from apps.jobs.registry import kinds_all
from apps.ops.selectors import queues_depth, workers_active

admin.site.site_header = "Conveyor operations"
admin.site.site_title = "Conveyor"

STATUS_COLOURS = {
    Job.Status.QUEUED: "#5b6b84",
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


def _duration(started: datetime | None, finished: datetime | None) -> str:
    if started is None or finished is None:
        return "—"
    seconds = (finished - started).total_seconds()
    return f"{seconds:.2f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


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
    limit = settings.CONVEYOR_ADMIN_ACTION_LIMIT
    selected = list(jobs[: limit + 1])
    if len(selected) > limit:
        messages.error(request, f"One action takes at most {limit} jobs (CONVEYOR_ADMIN_ACTION_LIMIT); "
                                "filter the list or select fewer.")
        return
    done = 0
    for job in selected:
        try:
            action(job=job)
            done += 1
        except ActionNotAllowed as exc:
            messages.warning(request, f"{job.id}: {exc}")
    if done:
        messages.success(request, f"{verb} {done} job(s).")


@admin.action(description="Retry selected jobs (failed or cancelled)", permissions=["change"])
def retry_jobs(modeladmin, request, queryset) -> None:
    _act(request, queryset, services.job_retry, "Retried")


@admin.action(description="Cancel selected jobs (queued, retrying, or running and interruptible)",
              permissions=["change"])
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
        "A job id, key=value inside params (e.g. seconds=2), an idempotency key, a trace id (X-Request-ID), "
        "or words from params or the error."
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
            "idempotency_key", "trace", "created_at", "published_at", "started_at", "finished_at", "duration",
            "next_retry_at", "elsewhere",
        ]}),
        ("Input and outcome", {"fields": ["params_pretty", "result_pretty", "error_text", "traceback_text"]}),
        ("Timeline", {"fields": ["timeline"]}),
        ("Log", {"fields": ["log_lines"]}),
    ]
    readonly_fields = [
        "id", "kind", "status_badge", "progress_bar", "progress_message", "queue", "attempts", "submitted_by",
        "idempotency_key", "trace", "created_at", "published_at", "started_at", "finished_at", "duration",
        "next_retry_at", "elsewhere", "params_pretty", "result_pretty", "error_text", "traceback_text", "timeline",
        "log_lines",
    ]

    def has_add_permission(self, request) -> bool:
        return False

    def get_search_results(self, request, queryset, search_term):
        return selectors.jobs_search(jobs=queryset, term=search_term), False

    def get_object(self, request, object_id, from_field=None):
        job = super().get_object(request, object_id, from_field)
        if job is not None:
            job.task_result = selectors.job_task_result(job=job)
        return job

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), "title": "Jobs"})

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Every field is the worker's or the submitter's fact: the page shows them, never saves them.
        extra_context = {**(extra_context or {}), "title": "Job", "show_save": False, "show_save_and_continue": False,
                         "show_save_and_add_another": False, "show_delete": False}
        return super().changeform_view(request, object_id, form_url, extra_context)

    # --- columns and fields ---

    @admin.display(description="job")
    def short_id(self, job: Job) -> str:
        return str(job.id)[:8]

    @admin.display(description="status")
    def status_badge(self, job: Job) -> str:
        return format_html(
            '<span class="job-status" style="background:{};color:#fff;padding:1px 7px;border-radius:9px">{}</span>',
            STATUS_COLOURS.get(job.status, "#5b6b84"), job.get_status_display(),
        )

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
        return _duration(job.started_at, job.finished_at)

    @admin.display(description="params")
    def params_pretty(self, job: Job) -> str:
        return format_html("<pre>{}</pre>", json.dumps(job.params, indent=2, sort_keys=True))

    @admin.display(description="result")
    def result_pretty(self, job: Job) -> str:
        result = getattr(job, "task_result", None)
        if result is None or result.status != "SUCCESS":
            return "—"
        return format_html("<pre>{}</pre>", result.result)

    @admin.display(description="error")
    def error_text(self, job: Job) -> str:
        return format_html("<pre>{}</pre>", job.error) if job.error else "—"

    @admin.display(description="traceback")
    def traceback_text(self, job: Job) -> str:
        result = getattr(job, "task_result", None)
        return format_html("<pre>{}</pre>", result.traceback) if result is not None and result.traceback else "—"

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
        lines = [(attempt.number, line) for attempt in job.attempt_set.all() for line in attempt.log]
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
        result = getattr(job, "task_result", None)
        if result is not None:
            links.append(("Task result", reverse("admin:django_celery_results_taskresult_change", args=[result.pk])))
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
        if request.method != "POST" or not self.has_change_permission(request):
            return HttpResponse("Use the button on the job's page.", status=405)
        _act(request, Job.objects.filter(id=job_id), action, verb)
        return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job_id]))

    def redrive_view(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST" or not self.has_change_permission(request):
            return HttpResponse("Use the re-drive button.", status=405)
        count = services.dead_letters_redrive()
        messages.success(request, f"Re-drove {count} job(s) from the dead queue; each runs again as a new attempt.")
        return HttpResponseRedirect(request.POST.get("next") or reverse("admin:jobs_job_changelist"))

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        now = timezone.now()
        hour = selectors.jobs_status_counts(since=now - timedelta(hours=1))
        day = selectors.jobs_status_counts(since=now - timedelta(days=1))
        context = {
            **self.admin_site.each_context(request),
            "title": "Jobs dashboard",
            "opts": self.model._meta,
            "statuses": [(status, hour.get(status, 0), day.get(status, 0), STATUS_COLOURS[status])
                         for status in Job.Status],
            "queues": queues_depth(),
            "workers": workers_active(),
            "chart": throughput_chart(rows=selectors.jobs_finished_per_minute(since=now - timedelta(hours=1)), now=now),
        }
        return TemplateResponse(request, "admin/jobs/dashboard.html", context)


def throughput_chart(*, rows: list[dict], now: datetime, minutes: int = 60) -> dict:
    """Bars of jobs finished per minute (failed in red) and a failure-rate line, as SVG coordinates."""
    width, height, bar = 600, 120, 10
    by_minute = {row["minute"]: row for row in rows}
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    series = []
    for index in range(minutes):
        minute = start + timedelta(minutes=index)
        row = by_minute.get(minute, {"succeeded": 0, "failed": 0})
        series.append((minute, row["succeeded"], row["failed"]))
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


admin.site.unregister(TaskResult)


@admin.register(TaskResult)
class TaskResultWithJobAdmin(TaskResultAdmin):
    """django-celery-results' pages, each linked to its job."""

    list_display = (*TaskResultAdmin.list_display, "job_link")
    fieldsets = (*TaskResultAdmin.fieldsets, ("Job", {"fields": ("job_link",)}))

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "job_link"]

    @admin.display(description="job")
    def job_link(self, result: TaskResult) -> str:
        # Each job kind's task runs one job whose id is the task id; other tasks have no job.
        if result.task_name not in {kind.task.name for kind in kinds_all()}:
            return "—"
        return format_html('<a href="{}">job {}</a>', reverse("admin:jobs_job_change", args=[result.task_id]),
                           result.task_id[:8])


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "created_at"]
    readonly_fields = ["user", "key_hash", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False
