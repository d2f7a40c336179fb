"""A job travels through the real RabbitMQ to a real worker and its result lands in PostgreSQL."""
import pytest
from django.db import transaction

from apps.jobs.models import Job, JobAttempt
from apps.jobs.services import job_submit
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def test_noop_job_runs_on_a_real_worker_and_its_attempt_holds_the_result(worker):
    # given a running worker; when a no-op job is submitted and committed
    with transaction.atomic():
        job, created = job_submit(kind="diagnostics.noop", params={}, submitted_by=None)
    # then the worker runs it and its attempt records the result in PostgreSQL
    attempt = wait_until(
        lambda: JobAttempt.objects.filter(job_id=job.id, outcome="succeeded").first(), timeout=30,
        what="the attempt to succeed",
    )
    assert created
    assert attempt.result == {} and attempt.worker.startswith("worker-")
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert job.published_at is not None and job.attempts == 1
