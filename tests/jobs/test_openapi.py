"""The OpenAPI document at /api/schema/ against the code: every URL under /api/ and its methods, the job and kind
JSON key by key, a valid OpenAPI 3.1 document; then the API fuzzed against it with schemathesis (no 5xx, every
answer as documented, every 4xx the JSON error)."""
import re
import uuid

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.test import Client
from django.urls import URLPattern, get_resolver
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.adapter.validators import validate_v3

from apps.jobs.models import Job, JobAttempt
from apps.jobs.openapi import api_schema
from apps.jobs.presenters import job_json, kind_json
from apps.jobs.registry import kind_get, kinds_all

pytestmark = pytest.mark.django_db


@pytest.fixture
def document() -> dict:
    response = Client().get("/api/schema/")  # no credentials: the document is public
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    return response.json()


def _api_routes() -> dict[str, set[str]]:
    """Every route under /api/ as the document writes it ({job_id}), with the methods its view answers."""
    routes = {}
    for pattern in get_resolver().url_patterns:
        if str(pattern.pattern) == "api/":
            for route in pattern.url_patterns:
                assert isinstance(route, URLPattern)
                path = "/api/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(route.pattern))
                # A method no view answers gets 405 with the ones it does in Allow.
                concrete = path.replace("{job_id}", str(uuid.uuid4()))
                allow = Client().generic("PATCH", concrete)["Allow"]
                routes[path] = {method.strip().lower() for method in allow.split(",")}
    return routes


def test_the_served_document_is_api_schema(document):
    assert document == api_schema()


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    validate_v3(document)  # raises on anything the OpenAPI 3.1 meta-schema refuses


def test_every_route_under_api_is_documented_with_exactly_the_methods_it_answers(document):
    documented = {path: set(operations) for path, operations in document["paths"].items()}
    assert documented == _api_routes()


def _refs_resolved(schema: dict, document: dict) -> dict:
    if "$ref" in schema:
        return _refs_resolved(document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], document)
    return schema


def _properties(schema: dict, document: dict) -> set[str]:
    schema = _refs_resolved(schema, document)
    own = set(schema.get("properties", {}))
    return own.union(*(_properties(part, document) for part in schema.get("allOf", [])))


def _required(schema: dict, document: dict) -> set[str]:
    schema = _refs_resolved(schema, document)
    own = set(schema.get("required", []))
    return own.union(*(_required(part, document) for part in schema.get("allOf", [])))


def test_the_job_and_kind_shapes_are_the_json_the_code_answers(document, user):
    schemas = document["components"]["schemas"]
    job = Job.objects.create(kind="diagnostics.sleep", queue="default", params={"seconds": 1}, submitted_by=user)
    attempt = JobAttempt.objects.create(job=job, number=1, started_at=job.created_at, log=[
        {"time": "t", "level": "INFO", "logger": "kind", "message": "hello"}])
    listed, detailed = job_json(job=job, viewer=user), job_json(job=job, viewer=user, attempts=[attempt])
    # every key the code answers is documented and required, and nothing else is
    assert set(listed) == _properties(schemas["Job"], document) == _required(schemas["Job"], document)
    assert set(detailed) == _required(schemas["JobDetail"], document)
    assert set(detailed["attempt_history"][0]) == _required(schemas["Attempt"], document)
    kind = kind_json(kind=kind_get("diagnostics.sleep"))
    assert set(kind) == _required(schemas["Kind"], document) == _properties(schemas["Kind"], document)
    assert set(kind["fields"][0]) == _required(schemas["KindField"], document)
    # the enumerations are the code's
    assert set(schemas["Job"]["properties"]["status"]["enum"]) == set(Job.Status.values)
    assert set(schemas["Attempt"]["properties"]["outcome"]["enum"]) == set(JobAttempt.Outcome.values)


def test_every_error_status_is_documented_with_the_error_shape(document):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    error = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
                    assert error["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            assert path == "/api/schema/" or "401" in operation["responses"], (method, path)


# --- the fuzz ---------------------------------------------------------------------------------------------

# Bounded so the whole fuzz takes about a minute in `make test`: examples per operation and per phase.
FUZZ_EXAMPLES = 200


def _fuzzed_document() -> dict:
    """The document the API serves (api_schema: test_the_served_document_is_api_schema checks they are one), with
    `kind` narrowed to the kinds registered here so that the fuzz reaches each kind's form rather than stopping at
    "unknown kind"."""
    document = api_schema()
    kinds = [kind.name for kind in kinds_all()]
    document["components"]["schemas"]["Submission"]["properties"]["kind"]["enum"] = kinds
    body = document["paths"]["/api/jobs/"]["post"]["requestBody"]["content"]
    body["multipart/form-data"]["schema"]["properties"]["kind"]["enum"] = kinds
    return document


# Loaded when the module is (schemathesis's lazy fixture loader does not run on this pytest); the API runs in this
# process, through its WSGI application.
fuzzed = schemathesis.openapi.from_dict(_fuzzed_document())
fuzzed.app = get_wsgi_application()


@pytest.fixture
def token(transactional_db, django_user_model) -> str:
    from apps.jobs.services import api_token_create

    user = django_user_model.objects.create_user("fuzz", password="fuzz-pass-123")
    Job.objects.create(kind="diagnostics.noop", queue="default", status="failed", submitted_by=user)
    return api_token_create(username=user.username)[0]


@schemathesis.check
def error_shape(ctx, response, case) -> None:
    """Every 4xx is the API's JSON error: {"error": "...", "fields": {...}} and nothing else."""
    if 400 <= response.status_code < 500:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error", "fields"}, body
        assert isinstance(body["error"], str) and body["error"] and isinstance(body["fields"], dict), body


@fuzzed.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
def test_the_api_answers_any_request_as_its_document_says(case, token):
    # given a user with a token and a job; when any request the document allows, or one it does not, is sent
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token}"},
        checks=[schemathesis.checks.not_a_server_error, schemathesis.specs.openapi.checks.status_code_conformance,
                schemathesis.specs.openapi.checks.content_type_conformance,
                schemathesis.specs.openapi.checks.response_headers_conformance,
                schemathesis.specs.openapi.checks.response_schema_conformance, error_shape],
    )
