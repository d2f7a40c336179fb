"""webhooks.deliver against a real HTTP server on loopback, run by a real worker."""
import hashlib
import hmac
import json

import pytest
from django.test import Client

from apps.jobs.models import Job, JobAttempt
from apps.webhooks.models import WebhookAttempt
from tests.processes import dead_letter_ids, job_finished, wait_until

pytestmark = pytest.mark.integration

def deliver(api_client: Client, endpoint_id: int, **params) -> Job:
    response = api_client.post(
        "/api/jobs/",
        {"kind": "webhooks.deliver", "params": {"endpoint": endpoint_id, "event": "order.paid", **params}},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    return Job.objects.get(id=response.json()["id"])


def test_500_500_200_is_delivered_on_attempt_3_with_a_valid_signature_each_time(
    webhook_worker, receiver, endpoint_for, api_client, user
):
    # given an endpoint that fails twice with 500, then accepts
    receiver.answer((500, {}, b"oops"), (500, {}, b"oops again"), (200, {}, b'{"ok": true}'))
    endpoint = endpoint_for(receiver.url)
    # when an event is delivered
    job = deliver(api_client, endpoint.id, payload={"order": 42})
    job = wait_until(lambda: job_finished(job), timeout=30, what="the delivery to finish")
    # then it succeeds on attempt 3, every request signed with the endpoint's secret
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 3
    assert [r.headers["Conveyor-Attempt"] for r in receiver.received] == ["1", "2", "3"]
    for request in receiver.received:
        timestamp, body = request.headers["Conveyor-Timestamp"], request.body
        expected = hmac.new(endpoint.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert request.headers["Conveyor-Signature"] == f"v1={expected}"
        assert request.headers["Conveyor-Event-Id"] == str(job.id)
        assert json.loads(body) == {
            "id": str(job.id), "event": "order.paid", "created_at": job.created_at.isoformat(), "data": {"order": 42},
        }
    # and each attempt's status, latency and response are on the job, in the API and on the page
    details = api_client.get(f"/api/jobs/{job.id}/").json()["details"]
    assert [(d["attempt"], d["status_code"], d["response_excerpt"]) for d in details] == [
        (1, 500, "oops"), (2, 500, "oops again"), (3, 200, '{"ok": true}'),
    ]
    assert all(d["latency_ms"] is not None for d in details)
    page = Client()
    page.force_login(user)
    assert "oops again" in page.get(f"/jobs/{job.id}/").content.decode()


def test_410_fails_at_once_as_permanent_and_is_dead_lettered(webhook_worker, receiver, endpoint_for, api_client):
    receiver.answer((410, {}, b"gone"))
    job = deliver(api_client, endpoint_for(receiver.url).id)
    job = wait_until(lambda: job_finished(job), timeout=30, what="the delivery to finish")
    assert job.status == Job.Status.FAILED and job.attempts == 1
    assert "answered 410 Gone" in job.error and "not retried" in job.error
    assert wait_until(lambda: str(job.id) in dead_letter_ids(), timeout=10, what="the dead letter")


def test_429_waits_as_long_as_retry_after_asks_then_delivers(webhook_worker, receiver, endpoint_for, api_client):
    receiver.answer((429, {"Retry-After": "2"}, b"slow down"), (200, {}, b"ok"))
    job = deliver(api_client, endpoint_for(receiver.url).id)
    job = wait_until(lambda: job_finished(job), timeout=30, what="the delivery to finish")
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 2
    first = JobAttempt.objects.get(job=job, number=1)
    # The backoff alone would be 0 s (base 0.4); the endpoint asked for 2 s.
    assert first.retry_delay == 2 and "asked to wait 2 s" in first.error


def test_an_endpoint_that_never_answers_times_out_each_attempt_then_is_dead_lettered(
    webhook_worker, silent_url, endpoint_for, api_client
):
    job = deliver(api_client, endpoint_for(silent_url).id)
    job = wait_until(lambda: job_finished(job), timeout=30, what="the delivery to give up")
    assert job.status == Job.Status.FAILED and job.attempts == 3
    assert "Gave up after 3 attempts" in job.error and "did not answer within 0.5 s" in job.error
    assert list(WebhookAttempt.objects.filter(job=job).values_list("status_code", flat=True)) == [None] * 3
    assert wait_until(lambda: str(job.id) in dead_letter_ids(), timeout=10, what="the dead letter")


def test_an_allowed_loopback_receiver_named_by_host_name_gets_that_name_as_host(
    webhook_worker, receiver, endpoint_for, api_client
):
    # given an endpoint named localhost (allowed by the test settings), which resolves to 127.0.0.1
    receiver.answer((200, {}, b"ok"))
    job = deliver(api_client, endpoint_for(f"http://localhost:{receiver.port}/hook").id)
    job = wait_until(lambda: job_finished(job), timeout=30, what="the delivery to finish")
    # then the worker delivered it to the checked address with the URL's host, not the address, as Host
    assert job.status == Job.Status.SUCCEEDED
    assert [r.headers["Host"] for r in receiver.received] == [f"localhost:{receiver.port}"]
