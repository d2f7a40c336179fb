"""Reads of webhook endpoints and of what delivery attempts got back."""
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from apps.jobs.models import Job
from apps.webhooks.models import WebhookAttempt, WebhookEndpoint


def webhook_endpoints_of(*, user: AbstractBaseUser | None) -> QuerySet[WebhookEndpoint]:
    if user is None or not user.is_authenticated:
        return WebhookEndpoint.objects.none()
    return WebhookEndpoint.objects.filter(owner=user)


def webhook_endpoints_active_of(*, user: AbstractBaseUser | None) -> QuerySet[WebhookEndpoint]:
    return webhook_endpoints_of(user=user).filter(active=True)


def webhook_attempts_of_job(job: Job) -> list[dict]:
    """Each POST of a delivery job, oldest first, as JSON for the job page and the API."""
    return [
        {
            "attempt": attempt.attempt,
            "url": attempt.url,
            "sent_at": attempt.sent_at.isoformat(),
            "status_code": attempt.status_code,
            "latency_ms": attempt.latency_ms,
            "response_excerpt": attempt.response_excerpt,
            "error": attempt.error,
        }
        for attempt in WebhookAttempt.objects.filter(job=job).order_by("attempt")
    ]
