"""The Conveyor backend of Django's Tasks API, without a worker: enqueue in the caller's transaction, the JSON
round-trip of arguments, what Django's own validation refuses for the flags not declared, results read from
the job's rows, and @task jobs among the others (admin, API). Runs on Django 5.2 (django-tasks) and 6.0."""
import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import django
import pytest
from django.core import checks
from django.db import transaction
from django.utils import timezone

from apps.jobs import lifecycle, services
from apps.jobs.models import Job, JobAttempt
from apps.tasks.backend import ConveyorBackend
from apps.tasks.framework import (
    InvalidTask,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task,
    task_backends,
    task_enqueued,
)
from apps.tasks.results import exception_class_path
from tests.tasks import task_functions

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def enqueued_signals():
    sent = []

    def receiver(sender, task_result, **kwargs):
        sent.append(task_result.id)

    task_enqueued.connect(receiver)
    yield sent
    task_enqueued.disconnect(receiver)


def test_the_backend_declares_defer_results_and_async_but_not_priority():
    backend = task_backends["default"]
    assert isinstance(backend, ConveyorBackend)
    flags = (backend.supports_defer, backend.supports_get_result, backend.supports_async_task,
             backend.supports_priority)
    assert flags == (True, True, True, False)


def test_enqueue_records_a_job_in_the_callers_transaction_and_says_so_once_it_commits(enqueued_signals):
    # when a task is enqueued inside a transaction
    with transaction.atomic():
        result = task_functions.add.enqueue(2, b=3)
        # then the job is there for the transaction, and nobody is told before it commits
        job = Job.objects.get(id=result.id)
        assert enqueued_signals == []
    # and once it commits, task_enqueued is sent with the result
    assert enqueued_signals == [result.id]
    assert (job.kind, job.params, job.status, job.queue, job.submitted_by) == (
        "tests.tasks.task_functions.add", {"args": [2], "kwargs": {"b": 3}}, "queued", "default", None)
    assert (result.status, result.args, result.kwargs, result.enqueued_at) == (
        TaskResultStatus.READY, [2], {"b": 3}, job.created_at)
    assert (result.attempts, result.errors, result.is_finished) == (0, [], False)


def test_a_rolled_back_enqueue_leaves_nothing_and_tells_nobody(enqueued_signals):
    with pytest.raises(RuntimeError), transaction.atomic():
        task_functions.add.enqueue(1, 1)
        raise RuntimeError("the view fails after enqueueing")
    assert Job.objects.count() == 0 and enqueued_signals == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((datetime(2030, 1, 1, tzinfo=UTC),), {}, "args[0] is a datetime.datetime"),
        ((), {"amount": Decimal("1.10")}, "kwargs['amount'] is a decimal.Decimal"),
        ((), {"ids": {1, 2}}, "kwargs['ids'] is a builtins.set"),
        (({1: "a"},), {}, "args[0] has the key 1"),
        ((math.nan,), {}, "args[0] is nan"),
        ((), {"user": object()}, "kwargs['user'] is a builtins.object"),
    ],
)
def test_arguments_json_cannot_carry_unchanged_are_refused_with_invalid_task(args, kwargs, message):
    with pytest.raises(InvalidTask, match=message.replace("[", r"\[").replace("]", r"\]")):
        task_functions.add.enqueue(*args, **kwargs)
    assert Job.objects.count() == 0


def test_tuples_travel_as_lists_as_with_djangos_own_backends():
    result = task_functions.add.enqueue((1, 2), {"nested": (3,)})
    assert Job.objects.get(id=result.id).params == {"args": [[1, 2], {"nested": [3]}], "kwargs": {}}


def test_djangos_own_validation_refuses_a_priority_since_the_backend_does_not_declare_it():
    with pytest.raises(InvalidTask, match="does not support setting priority"):
        task_functions.add.using(priority=10)
    assert task_functions.add.using(priority=0).priority == 0


def test_djangos_own_validation_and_conveyors_refuse_what_cannot_run():
    def nested(): ...

    with pytest.raises(InvalidTask, match="module level"):
        task(nested)
    with pytest.raises(InvalidTask, match="Queue 'nowhere' is not valid"):
        task_functions.add.using(queue_name="nowhere")
    with pytest.raises(InvalidTask, match="run_after must be an aware datetime"):
        task_functions.add.using(run_after=datetime(2030, 1, 1))


def test_a_deferred_task_is_a_scheduled_job_and_a_run_after_too_far_is_refused():
    # supports_defer: run_after holds the job, as a scheduled row due at that time
    when = timezone.now() + timedelta(minutes=5)
    result = task_functions.add.using(run_after=when).enqueue(1, 2)
    job = Job.objects.get(id=result.id)
    assert (job.status, job.due_at, result.status) == ("scheduled", when, TaskResultStatus.READY)
    assert result.task.run_after == when
    with pytest.raises(InvalidTask, match="days ahead"):
        task_functions.add.using(run_after=timezone.now() + timedelta(days=3650)).enqueue(1, 2)


def test_a_tasks_queue_name_is_its_jobs_queue():
    result = task_functions.on_reports.enqueue()
    assert Job.objects.get(id=result.id).queue == "reports"


def test_get_result_reads_the_job_and_refuses_ids_that_are_not_task_jobs():
    result = task_functions.add.enqueue(1, 2)
    again = task_functions.add.get_result(result.id)
    assert (again.id, again.status, again.args) == (result.id, TaskResultStatus.READY, [1, 2])
    ordinary, _ = services.job_submit(kind="diagnostics.noop", params={}, submitted_by=None)
    backend = task_backends["default"]
    for missing in (str(uuid.uuid4()), "not-a-uuid", str(ordinary.id)):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(missing)


def test_a_result_maps_retrying_to_ready_with_its_errors_and_cancelled_to_failed():
    # given a task job whose first attempt failed and waits for its retry
    result = task_functions.fail_twice.enqueue("x")
    job = Job.objects.get(id=result.id)
    [dispatch] = lifecycle.dispatch_claim(kinds=[job.kind], limit=1)
    start = lifecycle.attempt_start(job_id=str(job.id), generation=dispatch.generation, worker="w1@host")
    traceback = ('Traceback (most recent call last):\n  File "x.py", line 1, in f\n    raise ConnectionError("no")\n'
                 "ConnectionError: no\n")
    lifecycle.attempt_retry_later(job=start.job, error="ConnectionError: no", traceback=traceback, delay=60, log=[])
    # then it is READY, with the failed attempt among its errors
    result.refresh()
    assert (result.status, result.attempts, result.worker_ids) == (TaskResultStatus.READY, 1, ["w1@host"])
    assert [(e.exception_class_path, e.traceback) for e in result.errors] == [("builtins.ConnectionError", traceback)]
    assert result.errors[0].exception_class is ConnectionError
    # and once cancelled it is FAILED, its last error saying it was cancelled
    services.job_cancel(job=job)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.is_finished
    assert result.errors[-1].exception_class_path == "apps.jobs.errors.JobCancelled"
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    # and an operator's retry makes it READY again, its history kept
    services.job_retry(job=job)
    result.refresh()
    assert (result.status, len(result.errors)) == (TaskResultStatus.READY, 1)


@pytest.mark.parametrize(
    ("traceback", "path"),
    [
        ('Traceback (most recent call last):\n  File "a.py", line 3, in f\n    g()\nValueError: bad\nvalue\n',
         "builtins.ValueError"),
        ('Traceback (most recent call last):\n  File "a.py", line 3, in f\n    g()\n    ^^^\n'
         "billing.errors.CardDeclined: card 4242 declined\n", "billing.errors.CardDeclined"),
        ("The worker running this attempt died.", None),
        ("", None),
    ],
)
def test_an_attempts_exception_class_is_read_from_its_traceback(traceback, path):
    assert exception_class_path(traceback) == path


def test_a_lost_attempt_is_an_error_of_its_own_class():
    result = task_functions.add.enqueue(1, 2)
    JobAttempt.objects.create(job_id=result.id, number=1, worker="gone@host", started_at=timezone.now(),
                              outcome="lost", error="The worker running this attempt died.")
    [error] = task_functions.add.get_result(result.id).errors
    assert error.exception_class_path == "apps.tasks.results.WorkerLost" and "died" in error.traceback


def test_a_task_job_is_a_job_everywhere_but_not_submittable_through_the_api(api_client, admin_client, settings):
    # given a task job
    result = task_functions.add.enqueue(20, b=22)
    # then the API reads it like any job, but refuses to submit one: only code and schedules do
    assert api_client.get(f"/api/jobs/{result.id}/").status_code == 404  # not the user's own
    body = {"kind": "tests.tasks.task_functions.add", "params": {"args": [1, 2]}}
    response = api_client.post("/api/jobs/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400 and "submitted by code" in response.json()["error"]
    assert "tests.tasks.task_functions.add" not in {k["name"] for k in api_client.get("/api/kinds/").json()["results"]}
    # and the admin lists it under its function's path, found by a keyword argument
    page = admin_client.get("/admin/jobs/job/", {"q": "b=22"}).content.decode()
    assert str(result.id)[:8] in page and "tests.tasks.task_functions.add" in page
    assert admin_client.get(f"/admin/jobs/job/{result.id}/change/").status_code == 200
    assert admin_client.get(f"/jobs/{result.id}/").status_code == 200
    # and /metrics counts it under its function's path
    settings.CONVEYOR_METRICS_TOKEN = "t"
    metrics = admin_client.get("/metrics", HTTP_AUTHORIZATION="Bearer t").content.decode()
    assert 'conveyor_jobs_submitted_total{kind="tests.tasks.task_functions.add"} 1.0' in metrics


# The two tests below cover the two ways a @task's policy reaches the backend, one per Django line; `make test`
# runs this module on Django 5.2 with django-tasks and again on Django 6.0, so each test runs in one of the two.
@pytest.mark.skipif(django.VERSION >= (6, 0), reason="Django 6.0's @task takes no extra arguments")
def test_the_decorators_extra_arguments_set_retry_policy_and_time_limits():
    from apps.jobs.registry import kind_get
    from tests.tasks import task_functions_with_policy

    kind = kind_get("tests.tasks.task_functions_with_policy.charge")
    assert (kind.retry.transient, kind.retry.max_retries, kind.soft_time_limit, kind.time_limit) == (
        (TimeoutError,), 7, 20, 25)
    assert task_functions_with_policy.charge.max_retries == 7


@pytest.mark.skipif(django.VERSION < (6, 0), reason="django-tasks passes the decorator's extra arguments on")
def test_on_django_6_0_the_decorator_refuses_extra_arguments_so_options_set_the_policy():
    from apps.jobs.registry import kind_get

    with pytest.raises(TypeError):
        task(max_retries=7)(task_functions.add.func)
    assert kind_get("tests.tasks.task_functions.fail_twice").retry.max_retries == 3  # from OPTIONS["TASKS"]


def test_the_system_check_names_a_queue_conveyor_does_not_have_and_an_unknown_option():
    backend = ConveyorBackend("other", {"QUEUES": ["default", "elsewhere"], "OPTIONS": {"max_retry": 3}})
    problems = backend.check()
    assert [problem.id for problem in problems] == ["conveyor_tasks.E001", "conveyor_tasks.E002"]
    assert all(isinstance(problem, checks.Error) for problem in problems)
    assert "'elsewhere'" in problems[0].msg and "'max_retry'" in problems[1].msg
