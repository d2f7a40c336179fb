"""A job travels through the real RabbitMQ to a real worker and its result lands in PostgreSQL."""
from django.db import transaction
from django_celery_results.models import TaskResult

from apps.jobs.models import Job
from apps.jobs.services import job_submit
from tests.integration.conftest import wait_until


def test_noop_job_runs_on_a_real_worker_and_its_task_result_reads_success(worker):
    # given a running worker; when a no-op job is submitted and committed
    with transaction.atomic():
        job, created = job_submit(kind="diagnostics.noop", params={}, submitted_by=None)
    # then the worker runs it and the result backend stores SUCCESS in PostgreSQL
    result = wait_until(
        lambda: TaskResult.objects.filter(task_id=str(job.id), status="SUCCESS").first(), timeout=30,
        what="the TaskResult row",
    )
    assert created
    assert result.task_name == "diagnostics.noop"
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert job.published_at is not None and job.attempts == 1
