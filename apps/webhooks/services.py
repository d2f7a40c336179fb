"""Writes for webhooks: manage endpoints, and deliver one signed event with retry-aware outcomes."""
import hashlib
import hmac
import json
import math
import time
import uuid
from datetime import datetime
from email.utils import parsedate_to_datetime

import requests
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from apps.jobs.errors import PermanentJobError, TransientJobError
from apps.webhooks.models import WebhookAttempt, WebhookEndpoint
from apps.webhooks.ssrf import HostUnresolved, UrlRefused, webhook_post, webhook_url_check

SIGNATURE_VERSION = "v1"


def webhook_endpoint_create(
    *, owner: AbstractBaseUser, url: str, description: str = "", active: bool = True
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(owner=owner, url=url, description=description, active=active)
    endpoint.full_clean()
    endpoint.save()
    return endpoint


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, url: str, description: str, active: bool) -> WebhookEndpoint:
    endpoint.url, endpoint.description, endpoint.active = url, description, active
    endpoint.full_clean()
    endpoint.save(update_fields=["url", "description", "active"])
    return endpoint


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256 of `<timestamp>.<body>` keyed with the endpoint's secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def webhook_event_body(*, event_id: uuid.UUID, event: str, created_at: datetime, payload: object) -> bytes:
    """The same bytes on every attempt, so receivers can compare duplicates."""
    document = {"id": str(event_id), "event": event, "created_at": created_at.isoformat(), "data": payload}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - timezone.now()).total_seconds())
    except (TypeError, ValueError):
        return None


def _attempt_record(*, job_id: uuid.UUID, attempt: int, endpoint: WebhookEndpoint, **outcome) -> None:
    WebhookAttempt.objects.update_or_create(
        job_id=job_id,
        attempt=attempt,
        defaults={"endpoint": endpoint, "url": endpoint.url, "sent_at": timezone.now(), **outcome},
    )


def webhook_deliver(
    *, job_id: uuid.UUID, created_at: datetime, attempt: int, endpoint_id: int, event: str, payload: object
) -> dict:
    """POST the event to the endpoint once and record what came back.

    2xx delivers; connection errors, timeouts, 5xx and 429 raise TransientJobError (429/5xx with the
    endpoint's Retry-After); any other answer raises PermanentJobError.
    """
    endpoint = WebhookEndpoint.objects.filter(id=endpoint_id).first()
    if endpoint is None:
        raise PermanentJobError(f"Webhook endpoint {endpoint_id} was deleted; there is nowhere to deliver.")
    if not endpoint.active:
        raise PermanentJobError(f"Webhook endpoint {endpoint.url} is inactive; activate it, then retry this job.")

    def fail(error: Exception) -> Exception:
        _attempt_record(job_id=job_id, attempt=attempt, endpoint=endpoint, error=str(error))
        return error

    try:
        checked = webhook_url_check(endpoint.url)
    except HostUnresolved as exc:
        raise fail(TransientJobError(str(exc))) from None
    except UrlRefused as exc:
        raise fail(PermanentJobError(str(exc))) from None

    body = webhook_event_body(event_id=job_id, event=event, created_at=created_at, payload=payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Conveyor-Webhooks/1",
        "Conveyor-Event": event,
        "Conveyor-Event-Id": str(job_id),
        "Conveyor-Attempt": str(attempt),
        "Conveyor-Timestamp": timestamp,
        "Conveyor-Signature": webhook_signature(secret=endpoint.secret, timestamp=timestamp, body=body),
    }
    connect, read = settings.CONVEYOR_WEBHOOK_CONNECT_TIMEOUT, settings.CONVEYOR_WEBHOOK_READ_TIMEOUT
    started = time.monotonic()
    try:
        with webhook_post(checked, data=body, headers=headers, timeout=(connect, read)) as response:
            latency_ms = round((time.monotonic() - started) * 1000)
            excerpt = next(response.iter_content(settings.CONVEYOR_WEBHOOK_RESPONSE_EXCERPT_BYTES), b"")
    except requests.ConnectTimeout:
        raise fail(TransientJobError(f"Timed out after {connect:g} s connecting to {endpoint.url}.")) from None
    except requests.ReadTimeout:
        raise fail(TransientJobError(f"{endpoint.url} did not answer within {read:g} s.")) from None
    except requests.RequestException as exc:
        raise fail(TransientJobError(f"Could not deliver to {endpoint.url}: {exc}")) from None

    status = response.status_code
    _attempt_record(
        job_id=job_id,
        attempt=attempt,
        endpoint=endpoint,
        status_code=status,
        latency_ms=latency_ms,
        response_excerpt=excerpt.decode("utf-8", errors="replace"),
        error="" if 200 <= status < 300 else f"HTTP {status} {response.reason}",
    )
    answered = f"{endpoint.url} answered {status} {response.reason}"
    if 200 <= status < 300:
        return {"status_code": status, "latency_ms": latency_ms, "attempt": attempt}
    if status == 429 or status >= 500:
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        wait = f" and asked to wait {math.ceil(retry_after)} s" if retry_after is not None else ""
        raise TransientJobError(f"{answered}{wait}.", retry_after=retry_after)
    if 300 <= status < 400:
        raise PermanentJobError(
            f"{answered} (a redirect to {response.headers.get('Location', 'nowhere')}); redirects are not "
            "followed, so set the endpoint's URL to the final address."
        )
    raise PermanentJobError(f"{answered}; a 4xx answer other than 429 is not retried.")
