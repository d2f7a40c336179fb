"""Deferred jobs (`run_after`) through the API, the form, the lifecycle and every screen; idempotency keys of jobs
that no user submitted. The relay and worker side is in tests/tasks/test_deferred_run.py."""
import json
import re
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.jobs import lifecycle, services
from apps.jobs.models import Job

pytestmark = pytest.mark.django_db


def post_json(client, body):
    return client.post("/api/jobs/", data=json.dumps(body), content_type="application/json")


def test_a_job_submitted_with_a_future_run_after_is_scheduled_and_due_then(api_client):
    # given a time a minute ahead; when a job is submitted to run after it
    when = (timezone.now() + timedelta(minutes=1)).replace(microsecond=0)
    response = post_json(api_client, {"kind": "diagnostics.noop", "params": {}, "run_after": when.isoformat()})
    # then it is scheduled, due in the outbox at that time, and its JSON says when
    assert response.status_code == 202
    body = response.json()
    job = Job.objects.get(id=body["id"])
    assert (body["status"], body["run_after"]) == ("scheduled", when.isoformat())
    assert (job.status, job.due_at, job.run_after, job.published_at) == ("scheduled", when, when, None)
    assert body["actions"] == ["cancel"]


def test_a_run_after_already_come_queues_the_job_at_once(api_client):
    when = timezone.now() - timedelta(seconds=5)
    body = post_json(api_client, {"kind": "diagnostics.noop", "run_after": when.isoformat()}).json()
    job = Job.objects.get(id=body["id"])
    assert job.status == "queued" and job.due_at > when and job.run_after == when


@pytest.mark.parametrize(
    ("run_after", "message"),
    [
        ("tomorrow", "ISO 8601"),
        (1767225600, "ISO 8601"),
        ("2031-02-30T10:00:00Z", "ISO 8601"),
        ("2030-01-31T09:00:00", "needs a time zone"),
        ("2001-01-01T00:00:00Z", "in the past"),
        ("2999-01-01T00:00:00+01:00", "days ahead"),
    ],
)
def test_a_bad_run_after_gets_a_400_that_says_what_to_change(api_client, run_after, message):
    response = post_json(api_client, {"kind": "diagnostics.noop", "run_after": run_after})
    assert response.status_code == 400
    error = response.json()
    assert message in error["error"] and message in error["fields"]["run_after"][0]
    assert Job.objects.count() == 0


def test_the_form_page_schedules_a_job_and_shows_when(signed_in):
    # given the site's time zone (UTC) and a wall-clock time an hour ahead, as a datetime-local input sends it
    when = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    form = {"seconds": "1", "run_after": f"{when:%Y-%m-%dT%H:%M:%S}"}
    response = signed_in.post("/jobs/new/diagnostics.sleep/", form)
    job = Job.objects.get()
    assert response.status_code == 302 and (job.status, job.run_after) == ("scheduled", when)
    # then the job page and the list show it scheduled, with its time
    page = signed_in.get(f"/jobs/{job.id}/").content.decode()
    assert "Scheduled for" in page and f"{when:%H:%M:%S}" in page
    assert f"for {when:%Y-%m-%d %H:%M:%S}" in signed_in.get("/jobs/").content.decode()


def test_the_form_page_shows_a_bad_run_after_with_the_kinds_own_errors(signed_in):
    response = signed_in.post("/jobs/new/diagnostics.sleep/", {"seconds": "-3", "run_after": "2001-01-01T00:00"})
    page = response.content.decode()
    assert response.status_code == 200 and "in the past" in page and "greater than or equal to 0" in page
    assert Job.objects.count() == 0


def test_the_admin_shows_a_scheduled_job_with_its_time(admin_client):
    when = timezone.now() + timedelta(hours=2)
    job = Job(kind="diagnostics.noop", queue="default", params={}, run_after=when)
    lifecycle.job_record(job=job)
    listing = admin_client.get("/admin/jobs/job/").content.decode()
    assert re.search(r"Scheduled</span> <small class=\"job-run-after\">for " + f"{when:%Y-%m-%d %H:%M:%S}", listing)
    assert "Run after" in admin_client.get(f"/admin/jobs/job/{job.id}/change/").content.decode()


def test_a_scheduled_job_is_not_claimed_before_its_time_and_starts_from_its_message(transactional_db):
    # given a job scheduled an hour ahead
    job = Job(kind="diagnostics.noop", queue="default", params={}, run_after=timezone.now() + timedelta(hours=1))
    lifecycle.job_record(job=job)
    # then the relay does not claim it, and knows when it falls due
    assert lifecycle.dispatch_claim(kinds=["diagnostics.noop"], limit=10) == []
    assert lifecycle.dispatch_next_due(kinds=["diagnostics.noop"]) == job.run_after
    # when its time has come (moved here rather than waited for), it is claimed and its message starts it
    Job.objects.filter(id=job.id).update(due_at=timezone.now())
    [dispatch] = lifecycle.dispatch_claim(kinds=["diagnostics.noop"], limit=10)
    start = lifecycle.attempt_start(job_id=str(job.id), generation=dispatch.generation, worker="w")
    assert start.verdict is lifecycle.Verdict.STARTED and start.job.status == "running"
    lifecycle.attempt_release(job_id=str(job.id))


def test_a_scheduled_job_is_not_outbox_backlog_before_its_time(client, settings):
    # given a job due in an hour and one due now
    settings.CONVEYOR_METRICS_TOKEN = "t"
    for run_after in (timezone.now() + timedelta(hours=1), None):
        lifecycle.job_record(job=Job(kind="diagnostics.noop", queue="default", params={}, run_after=run_after))
    # then /metrics counts one job due for a message, and one job scheduled
    text = client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
    assert "conveyor_outbox_backlog 1.0" in text
    assert 'conveyor_jobs{kind="diagnostics.noop",status="scheduled"} 1.0' in text


def test_a_cancelled_scheduled_job_leaves_the_outbox(transactional_db):
    job = Job(kind="diagnostics.noop", queue="default", params={}, run_after=timezone.now() + timedelta(seconds=1))
    lifecycle.job_record(job=job)
    services.job_cancel(job=job)
    Job.objects.filter(id=job.id).update(due_at=timezone.now())  # even once its time has come
    assert lifecycle.dispatch_claim(kinds=["diagnostics.noop"], limit=10) == []
    assert Job.objects.get(id=job.id).status == "cancelled"


def test_jobs_of_no_submitter_share_one_space_of_idempotency_keys():
    # given a job a schedule submitted (no user) with a key; when the same key comes again
    first, created = services.job_submit(kind="diagnostics.noop", params={}, submitted_by=None, idempotency_key="s:1")
    again, created_again = services.job_submit(kind="diagnostics.noop", params={}, submitted_by=None,
                                               idempotency_key="s:1")
    # then it is the same job, and the database refuses a second row with that key outright
    assert created and not created_again and again.id == first.id
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.create(kind="diagnostics.noop", queue="default", idempotency_key="s:1")


def test_a_deleted_users_jobs_stay_and_forget_their_keys(django_user_model):
    # given two users who used the same key, each their own job
    ann, ben = (django_user_model.objects.create_user(name) for name in ("ann", "ben"))
    jobs = [services.job_submit(kind="diagnostics.noop", params={}, submitted_by=who, idempotency_key="same")[0]
            for who in (ann, ben)]
    # when both users are deleted, then their jobs stay, with no submitter and no key (not a system key)
    ann.delete()
    ben.delete()
    assert list(Job.objects.filter(id__in=[job.id for job in jobs]).values_list("submitted_by", "idempotency_key")) \
        == [(None, None)] * 2
