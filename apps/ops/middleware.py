"""Give every request an id: the caller's X-Request-ID when it sends a sane one, else a new one.

The id is returned in the response, put on every log line written while the request is handled,
and stored on the jobs the request submits (as their trace id).
"""
import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.ops.log import trace_id_var

_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get("X-Request-ID", "")
        request.request_id = offered if _SANE_ID.match(offered) else uuid.uuid4().hex
        # Not reset on the way out: Django logs a 4xx/5xx line after the middleware returns, and
        # that line needs the id too. The thread's next request sets its own.
        trace_id_var.set(request.request_id)
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response
