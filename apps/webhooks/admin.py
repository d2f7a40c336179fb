"""Webhook endpoints in the admin; delivery attempts are read-only records."""
from django.contrib import admin

from apps.webhooks.models import WebhookAttempt, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["url", "owner", "active", "description", "created_at"]
    list_filter = ["active"]
    search_fields = ["url", "description", "owner__username"]


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(admin.ModelAdmin):
    list_display = ["job", "attempt", "url", "status_code", "latency_ms", "sent_at"]
    search_fields = ["job__id", "url"]
    readonly_fields = [field.name for field in WebhookAttempt._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
