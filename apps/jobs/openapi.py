"""The JSON API described as an OpenAPI 3.1 document, served at /api/schema/.

Written by hand, next to the code it describes: what the code knows (the job states, the actions, the attempt
outcomes, the page and body limits) is read from it, and tests/jobs/test_openapi.py checks the rest against the
code (every URL under /api/ and its methods, every key of job_json and kind_json) and fuzzes the API against it
with schemathesis.
"""
from django.conf import settings

from apps.jobs import lifecycle
from apps.jobs.models import Job, JobAttempt

STATUS = {"type": "string", "enum": list(Job.Status.values)}
TIME = {"type": "string", "format": "date-time"}
TIME_OR_NULL = {"type": ["string", "null"], "format": "date-time"}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}

# Why each error status is answered; every one carries the Error body.
ERRORS = {
    400: "Malformed JSON, a body that is not an object, or invalid parameters (`fields` names each field's problems).",
    401: "No credentials, or a bad token.",
    403: "A session request without its CSRF token, or an action on another user's job without the permission "
         "to change jobs.",
    404: "No such job that you can see, or nothing at this path.",
    409: "The job's state does not allow the action, or the idempotency key was used for a different job.",
    413: "The body is larger than CONVEYOR_MAX_REQUEST_BYTES.",
    415: "The body is neither JSON nor multipart/form-data.",
    429: "Past your account's limits: jobs submitted a minute (with Retry-After), or jobs waiting at once.",
    503: "PostgreSQL is unreachable; try again after Retry-After seconds.",
}
RETRY_AFTER = {"description": "Seconds to wait before trying again.", "schema": {"type": "integer", "minimum": 1}}


def _errors(*statuses: int) -> dict:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def _ok(description: str, schema: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def api_schema() -> dict:
    """The OpenAPI 3.1 document of the JSON API, as a dict ready for JSON."""
    submission_fields = {
        "kind": {"type": "string", "minLength": 1, "description": "A job kind's name; GET /api/kinds/ lists them.",
                 "examples": ["diagnostics.sleep"]},
        "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 200,
                            "description": "Printable characters; the same key with the same job answers 200 with "
                                           "the job it made first, with other params 409."},
        "run_after": {**TIME, "description": "Optional: the job waits as `scheduled` until this time (with its UTC "
                                             "offset)."},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Conveyor",
            "version": "1",
            "description": "Submit, read, list and act on background jobs. Every answer is JSON; an error is "
                           '{"error": "...", "fields": {...}} with a status that says what was wrong.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}, {"sessionAuth": []}],
        "paths": {
            "/api/jobs/": {
                "get": {
                    "operationId": "jobs_list",
                    "summary": "Your jobs (staff: every job), newest first.",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": STATUS},
                        {"name": "kind", "in": "query", "schema": {"type": "string"}},
                        {"name": "page", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": settings.CONVEYOR_MAX_PAGE,
                                    "default": 1}},
                        {"name": "page_size", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": settings.CONVEYOR_API_MAX_PAGE_SIZE,
                                    "default": settings.CONVEYOR_PAGE_SIZE}},
                    ],
                    "responses": {"200": _ok("One page of jobs.", "JobPage"), **_errors(400, 401, 503)},
                },
                "post": {
                    "operationId": "jobs_submit",
                    "summary": "Submit a job; it is recorded at once and runs when a worker takes it.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Submission"}},
                            "multipart/form-data": {"schema": {
                                "type": "object",
                                "description": "For kinds that take a file: `kind`, `idempotency_key` and `run_after` "
                                               "beside the kind's own fields.",
                                "required": ["kind"],
                                "properties": {**submission_fields, "file": {
                                    "type": "string", "contentMediaType": "application/octet-stream"}},
                                "additionalProperties": {"type": "string"},
                            }},
                        },
                    },
                    "responses": {
                        "202": {**_ok("The job, recorded.", "Job"), "headers": {
                            "Location": {"description": "The job's URL.", "schema": {"type": "string"}}}},
                        "200": _ok("The job an earlier submission with this idempotency key made.", "Job"),
                        **_errors(400, 401, 403, 409, 413, 415, 429, 503),
                    },
                },
            },
            "/api/jobs/{job_id}/": {
                "get": {
                    "operationId": "job_read",
                    "summary": "One job with its result, traceback and attempts.",
                    "parameters": [JOB_ID],
                    "responses": {"200": _ok("The job.", "JobDetail"), **_errors(401, 404, 503)},
                },
            },
            **{
                f"/api/jobs/{{job_id}}/{action}/": {
                    "post": {
                        "operationId": f"job_{action}",
                        "summary": summary,
                        "parameters": [JOB_ID],
                        "responses": {"200": _ok("The job, as it is now.", "JobDetail"),
                                      **_errors(401, 403, 404, 409, 503)},
                    },
                }
                for action, summary in (
                    ("retry", "Run a failed or cancelled job again, as a new attempt."),
                    ("cancel", "Cancel a waiting job, or a running one of an interruptible kind."),
                )
            },
            "/api/kinds/": {
                "get": {
                    "operationId": "kinds_list",
                    "summary": "The job kinds and their fields.",
                    "responses": {"200": _ok("Every kind.", "KindList"), **_errors(401, 503)},
                },
            },
            "/api/schema/": {
                "get": {
                    "operationId": "schema_read",
                    "summary": "This document.",
                    "security": [],
                    "responses": {"200": {"description": "The OpenAPI document.",
                                          "content": {"application/json": {"schema": {"type": "object"}}}}},
                },
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "A token from `python manage.py create_token USERNAME`."},
                "sessionAuth": {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME,
                                "description": "A signed-in browser session; unsafe methods also need the "
                                               "X-CSRFToken header."},
            },
            "responses": {
                f"Error{status}": {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    **({"headers": {"Retry-After": {**RETRY_AFTER, "required": status == 503}}}
                       if status in (429, 503) else {}),
                }
                for status, description in ERRORS.items()
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "fields"],
                    "properties": {
                        "error": {"type": "string", "description": "What was wrong, and what to change."},
                        "fields": {"type": "object", "description": "Each input field's problems, by field name.",
                                   "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                    },
                    "additionalProperties": False,
                },
                "Submission": {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {**submission_fields,
                                   "params": {"type": "object", "description": "The kind's fields (GET /api/kinds/)."}},
                },
                "Job": {
                    "type": "object",
                    "required": [
                        "id", "kind", "params", "queue", "status", "attempts", "progress", "progress_message",
                        "error", "next_retry_at", "run_after", "idempotency_key", "trace_id", "created_at",
                        "published_at", "started_at", "finished_at", "actions", "url", "page_url",
                    ],
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "kind": {"type": "string"},
                        "params": {"type": "object"},
                        "queue": {"type": "string"},
                        "status": STATUS,
                        "attempts": {"type": "integer", "minimum": 0},
                        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
                        "progress_message": {"type": "string"},
                        "error": {"type": "string"},
                        "next_retry_at": {**TIME_OR_NULL, "description": "When a retrying job's next attempt is due."},
                        "run_after": {**TIME_OR_NULL, "description": "The start time asked for, if any."},
                        "idempotency_key": {"type": ["string", "null"]},
                        "trace_id": {"type": "string"},
                        "created_at": TIME,
                        "published_at": TIME_OR_NULL,
                        "started_at": TIME_OR_NULL,
                        "finished_at": TIME_OR_NULL,
                        "actions": {"type": "array", "uniqueItems": True,
                                    "items": {"type": "string", "enum": list(lifecycle.ACTIONS)},
                                    "description": "What the job's state allows now and you may do."},
                        "url": {"type": "string", "format": "uri-reference"},
                        "page_url": {"type": "string", "format": "uri-reference"},
                    },
                },
                "JobDetail": {
                    "allOf": [{"$ref": "#/components/schemas/Job"}],
                    "required": ["result", "traceback", "attempt_history", "details"],
                    "properties": {
                        "result": {"description": "The last attempt's JSON result, once it succeeded; else null."},
                        "traceback": {"type": "string"},
                        "attempt_history": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"}},
                        "details": {"type": ["object", "null"], "description": "What the kind adds (a webhook's "
                                                                                "deliveries, for one)."},
                    },
                },
                "Attempt": {
                    "type": "object",
                    "required": ["number", "worker", "started_at", "finished_at", "outcome", "error", "retry_delay",
                                 "result", "log"],
                    "properties": {
                        "number": {"type": "integer", "minimum": 1},
                        "worker": {"type": "string"},
                        "started_at": TIME,
                        "finished_at": TIME_OR_NULL,
                        "outcome": {"type": "string", "enum": JobAttempt.Outcome.values},
                        "error": {"type": "string"},
                        "retry_delay": {"type": ["number", "null"]},
                        "result": {},
                        "log": {"type": "array", "items": {"type": "object", "properties": {
                            "time": {"type": "string"}, "level": {"type": "string"}, "logger": {"type": "string"},
                            "message": {"type": "string"}}}},
                    },
                },
                "JobPage": {
                    "type": "object",
                    "required": ["results", "page", "page_size", "has_next"],
                    "properties": {
                        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                        "page": {"type": "integer", "minimum": 1},
                        "page_size": {"type": "integer", "minimum": 1},
                        "has_next": {"type": "boolean"},
                    },
                },
                "Kind": {
                    "type": "object",
                    "required": ["name", "title", "description", "queue", "interruptible", "max_retries", "fields"],
                    "properties": {
                        "name": {"type": "string"},
                        "title": {"type": "string"},
                        "description": {"type": "string"},
                        "queue": {"type": "string"},
                        "interruptible": {"type": "boolean"},
                        "max_retries": {"type": "integer", "minimum": 0},
                        "fields": {"type": "array", "items": {"$ref": "#/components/schemas/KindField"}},
                    },
                },
                "KindField": {
                    "type": "object",
                    "required": ["name", "type", "required", "label", "help_text", "initial", "choices"],
                    "properties": {
                        "name": {"type": "string"},
                        "type": {"type": "string", "description": "The Django form field's type: integer, float, "
                                                                  "char, choice, file, ..."},
                        "required": {"type": "boolean"},
                        "label": {"type": "string"},
                        "help_text": {"type": "string"},
                        "initial": {"description": "The form's initial value, if any."},
                        "choices": {"type": ["array", "null"]},
                    },
                },
                "KindList": {
                    "type": "object",
                    "required": ["results"],
                    "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/Kind"}}},
                },
            },
        },
    }
