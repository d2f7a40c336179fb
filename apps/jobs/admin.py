"""The jobs admin: find jobs and act on them (retry, cancel) through the same services as the API."""
from django.contrib import admin, messages

from apps.jobs import services
from apps.jobs.errors import ActionNotAllowed
from apps.jobs.models import ApiToken, Job, JobAttempt


class JobAttemptInline(admin.TabularInline):
    model = JobAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["number", "worker", "started_at", "finished_at", "outcome", "retry_delay", "error"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


def _act(modeladmin, request, queryset, action, verb: str) -> None:
    done = 0
    for job in queryset:
        try:
            action(job=job)
            done += 1
        except ActionNotAllowed as exc:
            messages.warning(request, f"{job.id}: {exc}")
    if done:
        messages.success(request, f"{verb} {done} job(s).")


@admin.action(description="Retry selected jobs")
def retry_jobs(modeladmin, request, queryset) -> None:
    _act(modeladmin, request, queryset, services.job_retry, "Retried")


@admin.action(description="Cancel selected jobs")
def cancel_jobs(modeladmin, request, queryset) -> None:
    _act(modeladmin, request, queryset, services.job_cancel, "Cancelled")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "status", "attempts", "progress", "queue", "submitted_by", "created_at"]
    list_filter = ["status", "kind", "queue", "created_at"]
    search_fields = ["=id", "=idempotency_key", "error"]
    readonly_fields = [field.name for field in Job._meta.fields]
    inlines = [JobAttemptInline]
    actions = [retry_jobs, cancel_jobs]
    list_select_related = ["submitted_by"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "created_at"]
    readonly_fields = ["user", "key_hash", "created_at"]

    def has_add_permission(self, request) -> bool:
        return False
