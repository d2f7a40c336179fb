"""Job schedules in the admin: define them (kind or @task, params, crontab or interval, catch-up, enabled), see each
one's next run and recent slots, open the jobs they made. Crontabs and intervals are django-celery-beat's admin."""
from urllib.parse import urlencode

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join

from apps.jobs.models import Job
from apps.schedules.forms import JobScheduleForm
from apps.schedules.models import JobSchedule
from apps.schedules.services import schedule_save


@admin.register(JobSchedule)
class JobScheduleAdmin(admin.ModelAdmin):
    form = JobScheduleForm
    list_display = ["name", "kind", "timing", "catch_up", "enabled", "next_run", "latest_job"]
    list_filter = ["enabled", "catch_up"]
    search_fields = ["name", "kind"]
    list_select_related = ["crontab", "interval"]
    readonly_fields = ["next_run", "last_slot_at", "last_error", "recent_slots", "all_jobs"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "params", "crontab", "interval", "catch_up", "enabled", "description"]}),
        ("Runs", {"fields": ["next_run", "last_slot_at", "last_error", "recent_slots", "all_jobs"]}),
    ]

    def save_model(self, request, obj: JobSchedule, form, change: bool) -> None:
        schedule_save(schedule=obj)

    @admin.display(description="timing")
    def timing(self, schedule: JobSchedule) -> str:
        return str(schedule.crontab or schedule.interval)

    @admin.display(description="next run", ordering="next_run_at")
    def next_run(self, schedule: JobSchedule) -> str:
        if schedule.next_run_at is None:
            return "—"
        if not schedule.enabled:
            return "— (disabled)"
        zone = schedule.crontab.timezone if schedule.crontab_id else timezone.get_current_timezone()
        local = timezone.localtime(schedule.next_run_at, zone)
        return f"{local:%Y-%m-%d %H:%M:%S %Z} ({schedule.next_run_at:%H:%M:%S} UTC)"

    @admin.display(description="latest job")
    def latest_job(self, schedule: JobSchedule) -> str:
        made = [entry for entry in schedule.recent or [] if entry.get("job")]
        if not made:
            return "—"
        return format_html('<a href="{}">{}</a>', reverse("admin:jobs_job_change", args=[made[0]["job"]]),
                           made[0]["job"][:8])

    @admin.display(description="recent slots")
    def recent_slots(self, schedule: JobSchedule) -> str:
        entries = schedule.recent or []
        if not entries:
            return "None yet."
        jobs = Job.objects.filter(id__in=[entry["job"] for entry in entries if entry.get("job")])
        statuses = {str(job_id): status for job_id, status in jobs.values_list("id", "status")}
        rows = []
        for entry in entries:
            slot = parse_datetime(entry["slot"])
            if entry.get("job"):
                job_id = entry["job"]
                status = statuses.get(job_id, "pruned by retention")
                link = format_html('<a href="{}">{}</a> {}', reverse("admin:jobs_job_change", args=[job_id]),
                                   job_id[:8], status)
            else:
                link = "—"
            rows.append((f"{slot:%Y-%m-%d %H:%M:%S %Z}", link, entry.get("note", "")))
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html('<table class="schedule-recent"><thead><tr><th>slot (UTC)</th><th>job</th><th></th>'
                           "</tr></thead><tbody>{}</tbody></table>", body)

    @admin.display(description="all its jobs")
    def all_jobs(self, schedule: JobSchedule) -> str:
        if schedule.pk is None:
            return "—"
        url = f"{reverse('admin:jobs_job_changelist')}?{urlencode({'q': f'schedule-{schedule.pk}'})}"
        return format_html('<a href="{}">every job of this schedule</a>', url)
