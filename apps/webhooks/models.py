"""Webhook endpoints and what each delivery attempt got back from one."""
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from apps.webhooks.ssrf import UrlRefused, webhook_url_check


def _secret_new() -> str:
    return secrets.token_urlsafe(32)


def _url_validate(url: str) -> None:
    try:
        webhook_url_check(url)
    except UrlRefused as exc:
        raise ValidationError(str(exc), code="url_refused") from None


class WebhookEndpoint(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500, validators=[_url_validate], help_text="Where events are POSTed.")
    # Kept in clear: signing needs it. Receivers verify the HMAC with the same value.
    secret = models.CharField(max_length=100, default=_secret_new, help_text="Signs every delivery (HMAC-SHA256).")
    active = models.BooleanField(default=True, help_text="Inactive endpoints receive nothing.")
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.url


class WebhookAttempt(models.Model):
    """One POST of one delivery job: written by the worker, shown on the job page."""

    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="webhook_attempts")
    attempt = models.PositiveIntegerField()
    endpoint = models.ForeignKey(WebhookEndpoint, null=True, on_delete=models.SET_NULL, related_name="attempts")
    url = models.URLField(max_length=500)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    # The first CONVEYOR_WEBHOOK_RESPONSE_EXCERPT_BYTES of the response body, decoded leniently.
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)
    sent_at = models.DateTimeField()

    class Meta:
        ordering = ["job", "attempt"]
        constraints = [models.UniqueConstraint(fields=["job", "attempt"], name="webhook_attempt_per_job_attempt")]

    def __str__(self) -> str:
        return f"{self.job_id} attempt {self.attempt}: {self.status_code or self.error}"
