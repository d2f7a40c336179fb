"""Middleware: every request gets an id (the caller's X-Request-ID when it sends a sane one, else a new one),
returned in the response, put on every log line written while it is handled (the access line too) and stored
on the jobs it submits; and a page asked for while PostgreSQL is unreachable answers 503, not 500.
"""
import logging
import re
import time
import uuid
from collections.abc import Callable

from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse

from apps.jobs.context import trace_id_var
from apps.jobs.database import CONNECTION_ERRORS, DatabaseUnavailable

# The access log: gunicorn's own would have neither the request id nor the JSON format.
access_logger = logging.getLogger("conveyor.access")
logger = logging.getLogger(__name__)
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get("X-Request-ID", "")
        request.request_id = offered if _SANE_ID.match(offered) else uuid.uuid4().hex
        # Cleared when the response is closed (below), not on the way out: Django logs a 4xx/5xx
        # line after the middleware returns, and that line needs the id too.
        trace_id_var.set(request.request_id)
        started = time.perf_counter()
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        access_logger.info(
            "%s %s %s %.1fms", request.method, request.get_full_path(), response.status_code,
            1000 * (time.perf_counter() - started),
        )
        return response


@receiver(request_finished)
def _trace_id_clear(**kwargs) -> None:
    # Work the thread does between requests (or a test's own code) is no request's.
    trace_id_var.set("")


class DatabaseUnavailableMiddleware:
    """A page asked for while PostgreSQL is unreachable answers 503 with Retry-After, saying so, rather than 500.

    The JSON API waits for PostgreSQL first (apps/jobs/api.py); pages and the admin answer at once.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (*CONNECTION_ERRORS, DatabaseUnavailable)):
            return None
        logger.warning("%s %s: PostgreSQL is unavailable (%s)", request.method, request.path, exception)
        message = "The database is unavailable; try again in a moment."
        if request.path.startswith("/api/"):
            response: HttpResponse = JsonResponse({"error": message, "fields": {}}, status=503)
        else:
            response = HttpResponse(f"<!doctype html><title>Unavailable</title><p>{message}</p>", status=503)
        response["Retry-After"] = "5"
        return response
