"""The JSON API: submission, reads, lists, actions and every kind of bad input (no broker needed: a
request only records the job, and the outbox relay, not running here, publishes it)."""
import json
import uuid

import pytest
from django.test import Client

from apps.jobs.models import Job
from tests.processes import wait_until

pytestmark = pytest.mark.django_db


def post_json(client: Client, path: str, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **extra)


def test_submit_answers_202_with_the_job_and_its_location(api_client, user):
    response = post_json(api_client, "/api/jobs/", {"kind": "diagnostics.sleep", "params": {"seconds": 1}})
    assert response.status_code == 202
    body = response.json()
    job = Job.objects.get(id=body["id"])
    assert response["Location"] == f"/api/jobs/{job.id}/"
    assert body["status"] == "queued" and body["kind"] == "diagnostics.sleep"
    assert job.params == {"seconds": 1.0, "steps": None} and job.submitted_by == user
    assert job.trace_id == response["X-Request-ID"]


def test_same_idempotency_key_twice_gives_one_job_and_200_the_second_time(api_client):
    body = {"kind": "diagnostics.noop", "params": {}, "idempotency_key": "order-42"}
    first = post_json(api_client, "/api/jobs/", body)
    second = post_json(api_client, "/api/jobs/", body)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["id"] == second.json()["id"]
    assert Job.objects.count() == 1


def test_idempotency_key_is_per_user(api_client, other_user):
    from apps.jobs.services import api_token_create

    token, _ = api_token_create(username=other_user.username)
    other = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    body = {"kind": "diagnostics.noop", "params": {}, "idempotency_key": "same"}
    assert post_json(api_client, "/api/jobs/", body).status_code == 202
    assert post_json(other, "/api/jobs/", body).status_code == 202
    assert Job.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message", "field"),
    [
        ("{not json", "application/json", 400, "not valid JSON", None),
        ("[1, 2]", "application/json", 400, "must be a JSON object", None),
        ({"params": {}}, "application/json", 400, "Name the job kind", "kind"),
        ({"kind": "no.such", "params": {}}, "application/json", 400, "Unknown job kind", "kind"),
        ({"kind": "diagnostics.sleep", "params": []}, "application/json", 400, "'params' must be", "params"),
        ({"kind": "diagnostics.sleep", "params": {}}, "application/json", 400, "not valid", "seconds"),
        ({"kind": "diagnostics.sleep", "params": {"seconds": "soon"}}, "application/json", 400, "not valid", "seconds"),
        ({"kind": "diagnostics.sleep", "params": {"seconds": -1}}, "application/json", 400, "not valid", "seconds"),
        ({"kind": "diagnostics.noop", "idempotency_key": 7}, "application/json", 400, "idempotency_key",
         "idempotency_key"),
        ({"kind": "diagnostics.noop", "idempotency_key": "a\u0000b"}, "application/json", 400, "printable",
         "idempotency_key"),
        ({"kind": "diagnostics.fail", "params": {"message": "a\u0000b"}}, "application/json", 400, "not valid",
         "message"),
        ("kind=diagnostics.noop", "text/plain", 415, "application/json", None),
    ],
)
def test_bad_submissions_get_json_errors_with_the_right_status(api_client, body, content_type, status, message, field):
    data = body if isinstance(body, str) else json.dumps(body)
    response = api_client.post("/api/jobs/", data=data, content_type=content_type)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    error = response.json()
    assert message in error["error"]
    if field:
        assert field in error["fields"]
    assert Job.objects.count() == 0


def test_body_over_the_limit_gets_413(api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post_json(api_client, "/api/jobs/", {"kind": "diagnostics.fail", "params": {"message": "x" * 2000}})
    assert response.status_code == 413
    assert "larger than 1000 bytes" in response.json()["error"]


def test_idempotency_key_reused_for_different_params_gets_409(api_client):
    body = {"kind": "diagnostics.flaky", "params": {"failures": 1}, "idempotency_key": "k"}
    assert post_json(api_client, "/api/jobs/", body).status_code == 202
    body["params"]["failures"] = 2
    response = post_json(api_client, "/api/jobs/", body)
    assert response.status_code == 409
    assert "already used" in response.json()["error"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Authentication required"),
        ({"HTTP_AUTHORIZATION": "Bearer wrong"}, "not valid"),
        ({"HTTP_AUTHORIZATION": "Basic abc"}, "Bearer"),
    ],
)
def test_missing_or_bad_credentials_get_401(headers, message):
    response = Client(**headers).get("/api/jobs/")
    assert response.status_code == 401
    assert message in response.json()["error"]


def test_session_post_without_csrf_token_gets_403(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = post_json(client, "/api/jobs/", {"kind": "diagnostics.noop", "params": {}})
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]


def test_wrong_method_gets_405_with_allow(api_client):
    response = api_client.delete("/api/jobs/")
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"


def test_unknown_job_and_unknown_path_get_json_404(api_client):
    assert api_client.get(f"/api/jobs/{uuid.uuid4()}/").status_code == 404
    response = api_client.get("/api/nothing-here/")
    assert response.status_code == 404
    assert response.json()["error"].startswith("Nothing at")


def test_a_user_cannot_see_another_users_job_but_staff_can(api_client, other_user, staff_user):
    job = Job.objects.create(kind="diagnostics.noop", queue="default", submitted_by=other_user)
    assert api_client.get(f"/api/jobs/{job.id}/").status_code == 404
    staff = Client()
    staff.force_login(staff_user)
    assert staff.get(f"/api/jobs/{job.id}/").status_code == 200


def test_list_filters_by_status_and_kind_and_pages(api_client, user):
    for _ in range(3):
        Job.objects.create(kind="diagnostics.noop", queue="default", submitted_by=user)
    Job.objects.create(kind="diagnostics.sleep", queue="default", submitted_by=user, status="failed")
    first = api_client.get("/api/jobs/?kind=diagnostics.noop&page_size=2").json()
    assert len(first["results"]) == 2 and first["has_next"] is True
    second = api_client.get("/api/jobs/?kind=diagnostics.noop&page_size=2&page=2").json()
    assert len(second["results"]) == 1 and second["has_next"] is False
    failed = api_client.get("/api/jobs/?status=failed").json()["results"]
    assert [job["kind"] for job in failed] == ["diagnostics.sleep"]


@pytest.mark.parametrize("query", ["status=exploded", "page=0", "page_size=100000", "page=two"])
def test_bad_list_parameters_get_400(api_client, query):
    response = api_client.get(f"/api/jobs/?{query}")
    assert response.status_code == 400
    assert response.json()["error"]


def test_retry_of_a_job_that_is_not_failed_gets_409(api_client, user):
    job = Job.objects.create(kind="diagnostics.noop", queue="default", submitted_by=user, status="succeeded")
    response = api_client.post(f"/api/jobs/{job.id}/retry/")
    assert response.status_code == 409
    assert "Only failed or cancelled" in response.json()["error"]


def test_cancel_a_queued_job_then_cancel_again_gets_409(api_client, user):
    job = Job.objects.create(kind="diagnostics.noop", queue="default", submitted_by=user)
    assert api_client.post(f"/api/jobs/{job.id}/cancel/").json()["status"] == "cancelled"
    assert api_client.post(f"/api/jobs/{job.id}/cancel/").status_code == 409


def test_a_running_job_of_a_kind_that_cannot_be_interrupted_cannot_be_cancelled(api_client, user):
    job = Job.objects.create(kind="diagnostics.flaky", queue="default", submitted_by=user, status="running")
    response = api_client.post(f"/api/jobs/{job.id}/cancel/")
    assert response.status_code == 409
    assert "cannot be interrupted" in response.json()["error"]


def test_retry_of_a_failed_job_queues_it_again(api_client, user):
    job = Job.objects.create(kind="diagnostics.noop", queue="default", submitted_by=user, status="failed", error="x")
    body = api_client.post(f"/api/jobs/{job.id}/retry/").json()
    assert body["status"] == "queued" and body["error"] == ""


def test_kinds_lists_each_kind_with_its_fields(api_client):
    kinds = {kind["name"]: kind for kind in api_client.get("/api/kinds/").json()["results"]}
    assert {"diagnostics.noop", "diagnostics.sleep", "diagnostics.flaky", "diagnostics.fail"} <= set(kinds)
    seconds = next(field for field in kinds["diagnostics.sleep"]["fields"] if field["name"] == "seconds")
    assert seconds["type"] == "float" and seconds["required"] is True


def test_create_token_command_creates_the_user_and_prints_a_working_token(capsys):
    from django.core.management import call_command

    call_command("create_token", "dave")
    token = capsys.readouterr().out.strip()
    response = Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/api/jobs/")
    assert response.status_code == 200
    from apps.jobs.models import ApiToken

    assert not ApiToken.objects.filter(key_hash=token).exists()  # only the hash is stored


def test_a_deactivated_users_token_is_refused_once_the_token_cache_time_has_passed(api_client, user, settings):
    # given a token the web has checked and remembers for a moment
    settings.CONVEYOR_API_TOKEN_CACHE_SECONDS = 0.5
    assert api_client.get("/api/jobs/").status_code == 200
    # when its user is deactivated
    user.is_active = False
    user.save()
    # then it still works until the moment has passed, and is refused after
    assert api_client.get("/api/jobs/").status_code == 200
    wait_until(lambda: api_client.get("/api/jobs/").status_code == 401, timeout=5, what="the token to be refused")


def test_without_a_token_cache_a_deleted_token_is_refused_at_once(api_client, user, settings):
    from apps.jobs.models import ApiToken

    settings.CONVEYOR_API_TOKEN_CACHE_SECONDS = 0
    assert api_client.get("/api/jobs/").status_code == 200
    ApiToken.objects.filter(user=user).delete()
    assert api_client.get("/api/jobs/").status_code == 401


# Found by the fuzz (tests/jobs/test_openapi.py): each answered 500 or an HTML page before.


def test_a_page_deeper_than_the_limit_answers_400_and_the_list_page_stops_at_it(api_client, signed_in, settings):
    settings.CONVEYOR_MAX_PAGE = 1000
    response = api_client.get("/api/jobs/", {"page": "1730120698777600524288"})
    assert response.status_code == 400 and "'page' is 1 to 1000" in response.json()["error"]
    assert signed_in.get("/jobs/", {"page": "1730120698777600524288"}).status_code == 200


def test_a_multipart_body_django_cannot_read_answers_the_json_error(api_client):
    response = api_client.post("/api/jobs/", data=b"--x\r\n", content_type="multipart/form-data")
    assert response.status_code == 400
    assert response.json()["error"].startswith("The request body could not be read")


def test_a_null_character_in_params_is_a_field_error_and_in_a_filter_matches_nothing(api_client, user):
    from apps.webhooks.models import WebhookEndpoint

    endpoint = WebhookEndpoint.objects.create(owner=user, url="http://127.0.0.1:9/hook")
    body = {"kind": "webhooks.deliver", "params": {"endpoint": endpoint.id, "event": "e", "payload": {"a": "b\x00"}}}
    response = post_json(api_client, "/api/jobs/", body)
    assert response.status_code == 400 and response.json()["fields"] == {
        "payload": ["Null characters (\\u0000) are not allowed."]}
    listed = api_client.get("/api/jobs/", {"kind": "diagnostics.noop\x00"})
    assert listed.status_code == 200 and listed.json()["results"] == []
