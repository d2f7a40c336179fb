"""The admin as a job console: list, filters, search, the job page, actions, results and the dashboard."""
from datetime import timedelta

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from apps.jobs.models import Job, JobAttempt
from apps.jobs.tallies import tallies_snapshot
from config.broker import dead_queue

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("olga", password="olga-pass-123"))
    return client


def _job(**fields) -> Job:
    return Job.objects.create(**{"kind": "diagnostics.sleep", "queue": "default", "params": {"seconds": 1}, **fields})


def _failed_job_with_history() -> Job:
    now = timezone.now()
    job = _job(kind="diagnostics.fail", params={"message": "disk full"}, status="failed", attempts=2,
               error="PermanentJobError: disk full", trace_id="req-abc123", published_at=now,
               started_at=now + timedelta(seconds=3), finished_at=now + timedelta(seconds=4))
    JobAttempt.objects.create(job=job, number=1, worker="w1@host", started_at=now, finished_at=now, outcome="retrying",
                              error="TransientJobError: busy", retry_delay=2,
                              log=[{"time": "t1", "level": "INFO", "logger": "kind", "message": "first try"}])
    JobAttempt.objects.create(job=job, number=2, worker="w1@host", started_at=now + timedelta(seconds=3),
                              finished_at=now + timedelta(seconds=4), outcome="failed", error=job.error,
                              traceback="Traceback (most recent call last):\n  boom",
                              log=[{"time": "t2", "level": "WARNING", "logger": "kind", "message": "giving up"}])
    return job


def test_job_list_shows_coloured_status_progress_bar_queue_and_duration(operator):
    now = timezone.now()
    job = _job(status="succeeded", progress=100, started_at=now, finished_at=now + timedelta(seconds=2.5))
    page = operator.get("/admin/jobs/job/").content.decode()
    assert str(job.id)[:8] in page
    assert 'class="job-status" style="background:#2f855a' in page
    assert '<progress max="100" value="100"' in page
    assert "2.50 s" in page


def test_job_list_filters_by_status_kind_and_queue(operator):
    failed = _job(kind="diagnostics.fail", status="failed")
    queued = _job(status="queued", queue="reports")
    page = operator.get("/admin/jobs/job/?status__exact=failed&kind=diagnostics.fail").content.decode()
    assert str(failed.id)[:8] in page and str(queued.id)[:8] not in page
    page = operator.get("/admin/jobs/job/?queue=reports").content.decode()
    assert str(queued.id)[:8] in page and str(failed.id)[:8] not in page


@pytest.mark.parametrize(
    "term",
    ["seconds=7", 'color="teal"', "order-42", "req-5150", "teal", "quota exceeded"],
    ids=["param-number", "param-json-string", "idempotency-key", "trace-id", "param-text", "error-text"],
)
def test_search_finds_a_job_by_param_idempotency_key_trace_id_or_error_text(operator, term):
    wanted = _job(params={"seconds": 7, "color": "teal"}, idempotency_key="order-42", trace_id="req-5150",
                  error="Quota exceeded today")
    other = _job(params={"seconds": 8, "color": "red"})
    page = operator.get("/admin/jobs/job/", {"q": term}).content.decode()
    assert str(wanted.id)[:8] in page and str(other.id)[:8] not in page


def test_search_by_job_id_finds_exactly_that_job(operator):
    wanted, other = _job(), _job()
    page = operator.get("/admin/jobs/job/", {"q": str(wanted.id)}).content.decode()
    assert str(wanted.id)[:8] in page and str(other.id)[:8] not in page


@override_settings(CONVEYOR_ADMIN_COUNT_LIMIT=3)
def test_job_list_counts_no_further_than_the_limit(operator):
    for _ in range(5):
        _job()
    page = operator.get("/admin/jobs/job/").content.decode()
    assert "3 jobs" in page
    assert "_facets" not in page  # no link to per-filter counts over the whole table


@override_settings(CONVEYOR_FLOWER_URL="https://ops.example.com", FLOWER_URL_PREFIX="/flower/")
def test_job_page_shows_input_outcome_timeline_trace_id_flower_link_and_log(operator):
    job = _failed_job_with_history()
    page = operator.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    assert "&quot;message&quot;: &quot;disk full&quot;" in page  # params
    assert "PermanentJobError: disk full" in page and "Traceback (most recent call last)" in page
    assert "<code>req-abc123</code>" in page and "/admin/jobs/job/?q=req-abc123" in page
    for event in ("submitted", "published", "attempt 1 started", "attempt 1 retrying", "next attempt in 2 s",
                  "attempt 2 failed", "finished: failed"):
        assert event in page, event
    assert f'href="https://ops.example.com/flower/task/{job.id}"' in page
    assert "#1 t1 INFO kind: first try" in page and "#2 t2 WARNING kind: giving up" in page
    assert 'name="_save"' not in page  # nothing on the page is editable
    assert f"/admin/jobs/job/{job.id}/retry/" in page


def test_retry_button_on_the_job_page_queues_the_failed_job_again(operator):
    job = _failed_job_with_history()
    response = operator.post(f"/admin/jobs/job/{job.id}/retry/", follow=True)
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.attempts == 2
    assert "Retried 1 job(s)." in response.content.decode()


def test_bulk_actions_retry_failed_and_cancel_queued_jobs_and_explain_the_rest(operator):
    failed, queued, succeeded = _job(status="failed"), _job(status="queued"), _job(status="succeeded")
    selected = [failed.id, succeeded.id]
    response = operator.post("/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": selected}, follow=True)
    assert "Retried 1 job(s)." in response.content.decode()
    assert "Only failed or cancelled jobs can be retried" in response.content.decode()
    operator.post("/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [queued.id]})
    failed.refresh_from_db(), queued.refresh_from_db()
    assert failed.status == Job.Status.QUEUED and queued.status == Job.Status.CANCELLED


def test_dashboard_shows_jobs_by_status_queues_workers_and_the_throughput_chart(operator):
    # given the lifeline's snapshot of the tallies at the start of this minute, then two jobs that finished
    # and one that waits
    tallies_snapshot(minute=timezone.now().replace(second=0, microsecond=0))
    succeeded, failed, _ = _job(), _job(), _job()
    Job.objects.filter(id=succeeded.id).update(status="succeeded", finished_at=timezone.now())
    Job.objects.filter(id=failed.id).update(status="failed", finished_at=timezone.now())
    # when an operator opens the dashboard
    page = operator.get("/admin/jobs/job/dashboard/").content.decode()
    # then it counts them from the tallies: by status now, and finished this minute in the chart
    assert 'id="jobs-by-status"' in page and 'id="throughput-chart"' in page
    assert "1 succeeded, 1 failed (50.0 % failed)" in page
    assert ">queued</a></td>\n              <td class=\"num\">1</td>" in page
    assert f"<td>{dead_queue().name}</td>" in page
    assert 'id="workers"' in page


@override_settings(CONVEYOR_ADMIN_ACTION_LIMIT=2)
def test_an_action_on_more_jobs_than_the_limit_changes_none_and_says_why(operator):
    jobs = [_job(status="failed") for _ in range(3)]
    response = operator.post("/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [j.id for j in jobs]},
                             follow=True)
    assert "One action takes at most 2 jobs" in response.content.decode()
    assert Job.objects.filter(status="failed").count() == 3
