"""The JSON API under /api/: submit, read, list and act on jobs; list kinds.

Every answer is JSON. Errors are {"error": "...", "fields": {...}} with a status that says what
was wrong; nothing a client sends can produce an HTML page or a 500.
"""
import functools
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.datastructures import MultiValueDict
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt

from apps.jobs import selectors, services
from apps.jobs.database import database_retried
from apps.jobs.errors import (
    ActionForbidden,
    ActionNotAllowed,
    IdempotencyKeyReused,
    JobParamsInvalid,
    RunAfterInvalid,
    SubmissionRefused,
    UnknownKind,
)
from apps.jobs.models import Job
from apps.jobs.openapi import api_schema
from apps.jobs.presenters import job_json, kind_json
from apps.jobs.registry import kind_get, kinds_all

logger = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, message: str, fields: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.fields, self.headers = status, message, fields or {}, headers or {}


def error_response(status: int, message: str, fields: dict | None = None, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse({"error": message, "fields": fields or {}}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _authenticate(request: HttpRequest) -> None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Send the token as 'Authorization: Bearer <token>'.")
        user = selectors.api_token_user(token=token.strip())
        if user is None:
            raise ApiError(401, "The API token is not valid. Create one with `python manage.py create_token USERNAME`.")
        request.user = user
        return
    if not request.user.is_authenticated:
        raise ApiError(401, "Authentication required: sign in, or send 'Authorization: Bearer <token>'.")
    # A browser session is open to cross-site forgery; a bearer token is not.
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        rejected = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
        if rejected is not None:
            raise ApiError(403, "CSRF check failed: send the X-CSRFToken header with a session-authenticated request.")


def api_endpoint(*methods: str, public: bool = False) -> Callable:
    """Method check, authentication (unless `public`) and error mapping shared by every endpoint.

    While PostgreSQL is unreachable (a restart, a failover) the request waits for it, up to
    CONVEYOR_WEB_DB_WAIT_SECONDS, and is handled again from the start; nothing it did before the failure was
    committed (a submission's INSERT rides out the outage on its own, job_submit), so nothing is done twice.
    Past the wait, DatabaseUnavailable makes it a 503 with Retry-After (apps/ops/middleware.py).
    """

    def decorator(view: Callable) -> Callable:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            def handle() -> HttpResponse:
                if request.method not in methods:
                    raise ApiError(
                        405, f"Method {request.method} is not allowed here; use {', '.join(methods)}.",
                        headers={"Allow": ", ".join(methods)},
                    )
                if not public:
                    _authenticate(request)
                return view(request, *args, **kwargs)

            try:
                return database_retried(handle, wait_seconds=settings.CONVEYOR_WEB_DB_WAIT_SECONDS,
                                        what=f"{request.method} {request.path}")
            except ApiError as exc:
                return error_response(exc.status, exc.message, exc.fields, exc.headers)
            except RequestDataTooBig:
                return error_response(
                    413, f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
                )
            except (MultiPartParserError, SuspiciousOperation) as exc:
                # A body Django cannot read (a multipart body without its boundary, too many fields): Django's
                # own answer would be an HTML page.
                return error_response(400, f"The request body could not be read: {exc or type(exc).__name__}.")

        return wrapper

    return decorator


def _json_body(request: HttpRequest) -> dict:
    content_type = request.content_type or ""
    if content_type != "application/json":
        raise ApiError(
            415,
            "Send JSON with 'Content-Type: application/json', or multipart/form-data for a job that takes"
            f" a file (got {content_type or 'none'!r}).",
        )
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return body


def _job_for(request: HttpRequest, job_id: uuid.UUID) -> Job:
    job = selectors.jobs_visible_to(user=request.user).filter(id=job_id).first()
    if job is None:
        raise ApiError(404, f"No job {job_id} that you can see.")
    return job


def _job_response(request: HttpRequest, job: Job, status: int) -> JsonResponse:
    return JsonResponse(job_json(job=job, viewer=request.user, attempts=selectors.job_attempts(job=job)),
                        status=status)


@api_endpoint("GET", "POST")
def jobs(request: HttpRequest) -> JsonResponse:
    return _jobs_submit(request) if request.method == "POST" else _jobs_list(request)


def _submission(request: HttpRequest) -> tuple[object, object, object, object, MultiValueDict | None]:
    """(kind, params, idempotency key, run_after, files) from a JSON body, or from a multipart upload whose
    fields are `kind`, `idempotency_key`, `run_after` and the params themselves."""
    if request.content_type == "multipart/form-data":
        fields = request.POST.copy()
        kind, key = fields.pop("kind", [None])[-1], fields.pop("idempotency_key", [None])[-1]
        run_after = fields.pop("run_after", [None])[-1] or None
        return kind, fields, key, run_after, request.FILES
    body = _json_body(request)
    return body.get("kind"), body.get("params", {}), body.get("idempotency_key"), body.get("run_after"), None


def _run_after(value: object) -> datetime | None:
    """An ISO 8601 time with its UTC offset, or None."""
    if value is None:
        return None
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        message = f"'run_after' must be an ISO 8601 time with its UTC offset, e.g. 2030-01-31T09:00:00Z; got {value!r}."
        raise ApiError(400, message, {"run_after": [message]})
    return parsed


def _jobs_submit(request: HttpRequest) -> JsonResponse:
    kind, params, key, run_after, files = _submission(request)
    if not isinstance(kind, str) or not kind:
        raise ApiError(400, "Name the job kind in 'kind'; GET /api/kinds/ lists them.", {"kind": ["Required."]})
    if not isinstance(params, dict | QueryDict):
        raise ApiError(400, "'params' must be a JSON object.", {"params": ["Must be an object."]})
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 200 or not key.isprintable()):
        message = "'idempotency_key' must be a string of 1 to 200 printable characters."
        raise ApiError(400, message, {"idempotency_key": [message]})
    try:
        job_kind = kind_get(kind)
    except UnknownKind as exc:
        raise ApiError(400, str(exc), {"kind": [str(exc)]}) from None
    if not job_kind.user_submittable:
        message = f"Jobs of kind {kind} are submitted by code and schedules, not through the API."
        raise ApiError(400, message, {"kind": [message]})
    try:
        job, created = services.job_submit(
            kind=kind, params=params, files=files, submitted_by=request.user, idempotency_key=key,
            trace_id=request.request_id, run_after=_run_after(run_after),
        )
    except JobParamsInvalid as exc:
        raise ApiError(400, "The job's parameters are not valid.", exc.errors) from None
    except RunAfterInvalid as exc:
        raise ApiError(400, str(exc), {"run_after": [str(exc)]}) from None
    except IdempotencyKeyReused as exc:
        raise ApiError(409, str(exc), {"idempotency_key": [str(exc)]}) from None
    except SubmissionRefused as exc:
        retry_after = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        raise ApiError(429, str(exc), headers=retry_after) from None
    # The job as recorded, without result or attempts: a new job has neither, and the request
    # that submits it should not pay for reading them.
    body = job_json(job=job, viewer=request.user)
    response = JsonResponse(body, status=202 if created else 200)
    response["Location"] = body["url"]
    return response


def _jobs_list(request: HttpRequest) -> JsonResponse:
    status, kind = request.GET.get("status", ""), request.GET.get("kind", "")
    if status and status not in Job.Status.values:
        message = f"Unknown status {status!r}; use one of {', '.join(Job.Status.values)}."
        raise ApiError(400, message, {"status": [message]})
    try:
        page = int(request.GET.get("page", 1))
        page_size = int(request.GET.get("page_size", settings.CONVEYOR_PAGE_SIZE))
    except ValueError:
        raise ApiError(400, "'page' and 'page_size' must be whole numbers.") from None
    if not 1 <= page <= settings.CONVEYOR_MAX_PAGE or not 1 <= page_size <= settings.CONVEYOR_API_MAX_PAGE_SIZE:
        raise ApiError(400, f"'page' is 1 to {settings.CONVEYOR_MAX_PAGE} (filter by status or kind to reach older "
                            f"jobs); 'page_size' is 1 to {settings.CONVEYOR_API_MAX_PAGE_SIZE}.")
    found = selectors.jobs_page(
        jobs=selectors.jobs_filtered(user=request.user, status=status, kind=kind), number=page, size=page_size
    )
    return JsonResponse(
        {
            "results": [job_json(job=job, viewer=request.user) for job in found.jobs],
            "page": page,
            "page_size": page_size,
            "has_next": found.has_next,
        }
    )


@api_endpoint("GET")
def job_detail(request: HttpRequest, job_id: uuid.UUID) -> JsonResponse:
    return _job_response(request, _job_for(request, job_id), status=200)


@api_endpoint("POST")
def job_retry(request: HttpRequest, job_id: uuid.UUID) -> JsonResponse:
    return _job_action(request, job_id, services.job_retry)


@api_endpoint("POST")
def job_cancel(request: HttpRequest, job_id: uuid.UUID) -> JsonResponse:
    return _job_action(request, job_id, services.job_cancel)


def _job_action(request: HttpRequest, job_id: uuid.UUID, action: Callable[..., Job]) -> JsonResponse:
    job = _job_for(request, job_id)
    try:
        job = action(job=job, by=request.user)
    except ActionForbidden as exc:
        raise ApiError(403, str(exc)) from None
    except ActionNotAllowed as exc:
        raise ApiError(409, str(exc)) from None
    return _job_response(request, job, status=200)


@api_endpoint("GET")
def kinds(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"results": [kind_json(kind=kind) for kind in kinds_all() if kind.user_submittable]})


@api_endpoint("GET", public=True)
def schema(request: HttpRequest) -> JsonResponse:
    """The API's OpenAPI document; public, as it describes the API and holds no one's data."""
    return JsonResponse(api_schema())


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error_response(404, f"Nothing at {request.path}.")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error_response(500, "Internal error; it has been logged.")
    from django.views.defaults import server_error as html_server_error

    return html_server_error(request)
