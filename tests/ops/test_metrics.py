"""GET /metrics: Prometheus text computed from the job tables and RabbitMQ, behind a bearer token."""
from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.jobs.models import Job, JobAttempt
from config.broker import dead_queue, queue_name, topology_declare
from config.celery import app as celery_app

pytestmark = pytest.mark.django_db
TOKEN = "metrics-secret-123"


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _attempt(job: Job, number: int, started, seconds: float, outcome: str, status: str) -> None:
    """An attempt of `job` as a worker writes it: started (the job running), then ended `seconds` later."""
    Job.objects.filter(id=job.id).update(status="running", attempts=number, started_at=started)
    attempt = JobAttempt.objects.create(job=job, number=number, started_at=started)
    JobAttempt.objects.filter(id=attempt.id).update(outcome=outcome, finished_at=started + timedelta(seconds=seconds))
    Job.objects.filter(id=job.id).update(status=status)


def _given_jobs_with_history() -> None:
    with celery_app.connection_for_write() as connection:
        topology_declare(connection)
    created = timezone.now() - timedelta(minutes=5)
    ok = Job.objects.create(kind="diagnostics.flaky", queue="default", created_at=created, published_at=created)
    dead = Job.objects.create(kind="diagnostics.flaky", queue="default", created_at=created, published_at=created)
    Job.objects.create(kind="diagnostics.noop", queue="default", due_at=created)  # never published: the outbox
    Job.objects.filter(id__in=[ok.id, dead.id]).update(created_at=created)
    start = created + timedelta(seconds=0.2)  # 0.2 s from submission to the first start
    _attempt(ok, 1, start, 0.5, "retrying", "retrying")
    _attempt(ok, 2, start + timedelta(seconds=2), 3, "succeeded", "succeeded")
    _attempt(dead, 1, start, 1, "failed", "failed")


@override_settings(CONVEYOR_METRICS_TOKEN=TOKEN)
def test_metrics_parse_as_prometheus_text_with_counts_by_kind_histograms_outbox_and_queues(client):
    _given_jobs_with_history()
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=")
    samples = _samples(response.content.decode())
    flaky = (("kind", "diagnostics.flaky"),)
    assert samples[("conveyor_jobs_submitted_total", flaky)] == 2
    assert samples[("conveyor_jobs_submitted_total", (("kind", "diagnostics.noop"),))] == 1
    assert samples[("conveyor_jobs_succeeded_total", flaky)] == 1
    assert samples[("conveyor_jobs_failed_total", flaky)] == 2  # one retried attempt, one that failed
    assert samples[("conveyor_jobs_retried_total", flaky)] == 1
    assert samples[("conveyor_jobs_dead_total", flaky)] == 1
    assert samples[("conveyor_outbox_backlog", ())] == 1
    # three finished attempts of 0.5 s, 3 s and 1 s
    assert samples[("conveyor_job_duration_seconds_bucket", (*flaky, ("le", "0.5")))] == 1
    assert samples[("conveyor_job_duration_seconds_bucket", (*flaky, ("le", "1.0")))] == 2
    assert samples[("conveyor_job_duration_seconds_bucket", (*flaky, ("le", "+Inf")))] == 3
    assert samples[("conveyor_job_duration_seconds_sum", flaky)] == pytest.approx(4.5)
    # two first attempts, each 0.2 s after submission
    assert samples[("conveyor_job_start_latency_seconds_bucket", (*flaky, ("le", "0.1")))] == 0
    assert samples[("conveyor_job_start_latency_seconds_bucket", (*flaky, ("le", "0.25")))] == 2
    for queue in (queue_name("default"), dead_queue().name):
        assert ("conveyor_queue_messages_ready", (("queue", queue),)) in samples


@override_settings(CONVEYOR_METRICS_TOKEN=TOKEN)
def test_metrics_refuse_a_missing_or_wrong_token(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401


@override_settings(CONVEYOR_METRICS_TOKEN="")
def test_metrics_are_off_until_a_token_is_set(client):
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 403 and "CONVEYOR_METRICS_TOKEN" in response.content.decode()


@override_settings(CONVEYOR_METRICS_TOKEN=TOKEN)
def test_metrics_and_the_dashboard_count_nothing_over_the_jobs(client, django_user_model):
    # given some history; when /metrics is scraped and the dashboard opened
    _given_jobs_with_history()
    client.force_login(django_user_model.objects.create_superuser("olga", password="olga-pass-123"))
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
        assert client.get("/admin/jobs/job/dashboard/").status_code == 200
    # then the only read of the jobs table is the outbox's count, which its partial index answers
    reads = [query["sql"] for query in queries if 'FROM "jobs_job"' in query["sql"]]
    assert len(reads) == 1 and '"jobs_job"."published_at" IS NULL' in reads[0], reads
    assert not [query["sql"] for query in queries if 'FROM "jobs_jobattempt"' in query["sql"]]
