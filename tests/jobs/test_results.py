"""The result backend writes a task's TaskResult row in one statement and keeps the row's history."""
import pytest
from celery import states
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

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
