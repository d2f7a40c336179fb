"""Results are written in one statement: by the backend (keeping the row's history), and with a job's success."""
import pytest
from celery import states
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from apps.jobs import services
from apps.jobs.models import Job
from config.celery import app


@pytest.mark.django_db
def test_a_result_is_written_in_one_statement():
    # given the configured backend; when a task's outcome is stored
    with CaptureQueriesContext(connection) as queries:
        app.backend.store_result("5d0c1a8e-0000-4000-8000-000000000001", {"rows": 3}, states.SUCCESS)
    # then one INSERT ... ON CONFLICT wrote the row the admin and the job pages read
    assert len(queries) == 1 and "ON CONFLICT" in queries[0]["sql"]
    row = TaskResult.objects.get(task_id="5d0c1a8e-0000-4000-8000-000000000001")
    assert (row.status, row.result) == ("SUCCESS", '{"rows": 3}')
    assert app.backend.get_task_meta(row.task_id)["result"] == {"rows": 3}


@pytest.mark.django_db
def test_a_later_state_overwrites_the_row_and_keeps_its_creation_time():
    # given a task that was retried
    task_id = "5d0c1a8e-0000-4000-8000-000000000002"
    app.backend.store_result(task_id, None, states.RETRY, traceback="first attempt")
    created = TaskResult.objects.get(task_id=task_id).date_created
    # when its outcome is stored
    app.backend.store_result(task_id, {"ok": True}, states.SUCCESS)
    # then the one row holds the outcome and still says when the task was first recorded
    row = TaskResult.objects.get(task_id=task_id)
    assert (row.status, row.date_created) == ("SUCCESS", created)
    assert row.date_done >= created


@pytest.mark.django_db(transaction=True)
def test_a_jobs_success_its_attempt_and_its_result_are_written_in_one_statement():
    # given a job a worker has started
    job = Job.objects.create(kind="diagnostics.noop", queue="default", params={"n": 1})
    started = services.job_start(job_id=str(job.id), worker="worker@host")
    assert (started.status, started.attempts, started.params) == ("running", 1, {"n": 1})
    # when it succeeds
    row = app.backend.task_result_row(str(job.id), {"rows": 3}, states.SUCCESS)
    with CaptureQueriesContext(connection) as queries:
        services.job_succeed(job=started, task_result=row)
    # then one statement recorded the job, its attempt and the result the pages read
    assert len(queries) == 1
    job.refresh_from_db()
    assert (job.status, job.progress) == ("succeeded", 100)
    assert job.attempt_set.get().outcome == "succeeded"
    result = TaskResult.objects.get(task_id=str(job.id))
    assert (result.status, result.result) == ("SUCCESS", '{"rows": 3}')
