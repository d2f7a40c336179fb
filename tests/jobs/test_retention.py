"""A job's outcome is Conveyor's to keep: Celery's cleanup cannot take it, and retention prunes it with its files."""
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from django_celery_results.models import TaskResult

from apps.jobs import lifecycle
from apps.jobs.models import Job, JobAttempt
from apps.jobs.reconciler import jobs_prune
from apps.reports.selectors import report_result_name, report_upload_name
from config.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)


def finished(*, kind: str = "diagnostics.noop", result: str = '{"rows": 3}', days_ago: float = 0,
             submitted_by=None) -> Job:
    """A job run to success as a worker runs it, its dates then moved `days_ago` into the past."""
    job = Job(kind=kind, queue="default", params={}, submitted_by=submitted_by)
    lifecycle.job_record(job=job)
    [dispatch] = lifecycle.dispatch_claim(kinds=[kind], limit=1)
    start = lifecycle.attempt_start(job_id=str(job.id), generation=dispatch.generation, worker="w@host")
    lifecycle.attempt_succeed(job=start.job, result_json=result, log=[])
    then = timezone.now() - timedelta(days=days_ago)
    Job.objects.filter(id=job.id).update(created_at=then, started_at=then, finished_at=then)
    JobAttempt.objects.filter(job=job).update(started_at=then, finished_at=then)
    return job


def test_a_finished_jobs_result_stays_on_its_page_and_in_the_api_after_celerys_cleanup(api_client, user):
    # given a job that succeeded two days ago, and a Celery task's result older than Celery keeps results
    job = finished(days_ago=2, submitted_by=user)
    TaskResult.objects.create(task_id="celery-own-task", task_name="celery.backend_cleanup", status="SUCCESS")
    TaskResult.objects.filter(task_id="celery-own-task").update(
        date_done=timezone.now() - settings.CELERY_RESULT_EXPIRES - timedelta(days=1))
    # when Celery's daily cleanup (celery.backend_cleanup) runs
    celery_app.backend.cleanup()
    # then Celery's old row is gone, and the job's result is still on its page and in the API
    assert not TaskResult.objects.filter(task_id="celery-own-task").exists()
    body = api_client.get(f"/api/jobs/{job.id}/").json()
    assert body["status"] == "succeeded" and body["result"] == {"rows": 3}
    api_client.force_login(user)
    assert "&quot;rows&quot;: 3" in api_client.get(f"/jobs/{job.id}/").content.decode()


def test_celerys_cleanup_keeps_results_as_long_as_jobs_are_kept():
    assert settings.CELERY_RESULT_EXPIRES == timedelta(days=settings.CONVEYOR_JOB_RETENTION_DAYS)


def test_jobs_older_than_the_retention_are_pruned_with_their_attempts_and_files(settings):
    # given a report finished past the retention with its upload and result stored, and newer jobs
    settings.CONVEYOR_JOB_RETENTION_DAYS = 30
    old = finished(kind="reports.csv_summary", days_ago=31)
    names = [report_upload_name(job_id=old.id), report_result_name(job_id=old.id)]
    for name in names:
        default_storage.save(name, ContentFile(b"region,amount\n"))
    recent = finished(days_ago=29)
    waiting = Job(kind="diagnostics.noop", queue="default")
    lifecycle.job_record(job=waiting)
    Job.objects.filter(id=waiting.id).update(created_at=timezone.now() - timedelta(days=60))
    # when the lifeline prunes
    pruned = jobs_prune()
    # then the old report is gone with its attempts and both files; the rest stays
    assert pruned == 1
    assert not Job.objects.filter(id=old.id).exists() and not JobAttempt.objects.filter(job_id=old.id).exists()
    assert not any(default_storage.exists(name) for name in names)
    assert set(Job.objects.values_list("id", flat=True)) == {recent.id, waiting.id}


def test_pruning_goes_in_batches_oldest_first(settings):
    settings.CONVEYOR_RETENTION_BATCH_SIZE = 2
    jobs = [finished(days_ago=40 - index) for index in range(3)]
    assert jobs_prune() == 2
    assert list(Job.objects.values_list("id", flat=True)) == [jobs[2].id]
    assert jobs_prune() == 1 and jobs_prune() == 0
