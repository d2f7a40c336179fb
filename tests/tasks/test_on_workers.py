"""@task functions run by real Conveyor workers, published by a real relay, over RabbitMQ and PostgreSQL: a
transaction's rollback, one run per commit, results and errors read back through Django's API, the attempt number
across retries, async functions, Django's signals. Runs on Django 5.2 (django-tasks) and 6.0 (django.tasks)."""
import pytest
from django.db import transaction

from apps.jobs.models import Job, JobAttempt
from apps.tasks.framework import TaskResultStatus
from tests.processes import wait_until
from tests.tasks import task_functions

pytestmark = pytest.mark.integration


def logged(process, line: str) -> bool:
    """Whether `process` has written `line` (for wait_until: task_finished comes just after the outcome is stored)."""
    return line in process.output()


def finished(result):
    """`result` refreshed, if its task has finished (for wait_until)."""
    result.refresh()
    return result if result.is_finished else None


def test_a_task_enqueued_in_a_rolled_back_transaction_never_runs_and_a_committed_one_runs_once(worker):
    # given a task enqueued in a transaction that rolls back, and one in a transaction that commits
    with pytest.raises(RuntimeError), transaction.atomic():
        task_functions.add.enqueue(100, 1)
        raise RuntimeError("the view fails")
    with transaction.atomic():
        result = task_functions.add.enqueue(2, b=3)
    # then the committed one runs once and get_result reads its return value
    wait_until(lambda: finished(result), timeout=30, what="the task to finish")
    again = task_functions.add.get_result(result.id)
    assert (again.status, again.return_value, again.attempts) == (TaskResultStatus.SUCCESSFUL, 5, 1)
    assert again.worker_ids[0].startswith("worker-") and again.errors == []
    assert again.enqueued_at <= again.started_at == again.last_attempted_at <= again.finished_at
    # and the rolled-back one left nothing to run: one job, one attempt
    assert Job.objects.count() == 1 and JobAttempt.objects.count() == 1
    # and Django's signals fired in the worker, task_finished once the outcome was stored
    wait_until(lambda: logged(worker, f"signal task_finished id={result.id} status=SUCCESSFUL attempts=1"),
               timeout=10, what="task_finished")
    assert f"signal task_started id={result.id} status=RUNNING attempts=1" in worker.output()


def test_a_failing_task_shows_its_error_class_and_traceback(worker):
    result = task_functions.fail.enqueue("the card was declined")
    wait_until(lambda: finished(result), timeout=30, what="the task to fail")
    assert result.status == TaskResultStatus.FAILED
    [error] = result.errors
    assert error.exception_class is ValueError
    assert "the card was declined" in error.traceback and "task_functions.py" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    wait_until(lambda: logged(worker, f"signal task_finished id={result.id} status=FAILED attempts=1"), timeout=10,
               what="task_finished")


def test_takes_context_sees_the_attempt_number_across_retries(worker):
    # given a task that fails with a retried error on its first two attempts (OPTIONS: retry_on ConnectionError)
    result = task_functions.fail_twice.enqueue("sync")
    # then its third attempt succeeds, and saw itself as attempt 3 with three workers' attempts behind it
    wait_until(lambda: finished(result), timeout=30, what="the task to succeed on its third attempt")
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"label": "sync", "attempt": 3, "workers": 3}
    assert [error.exception_class_path for error in result.errors] == ["builtins.ConnectionError"] * 2
    assert "attempt 2 cannot connect" in result.errors[1].traceback
    # task_started came at each attempt, task_finished once, at the end
    wait_until(lambda: logged(worker, f"signal task_finished id={result.id}"), timeout=10, what="task_finished")
    output = worker.output()
    assert [f"id={result.id} status=RUNNING attempts={n}" in output for n in (1, 2, 3)] == [True] * 3
    assert output.count(f"signal task_finished id={result.id}") == 1


def test_an_async_task_function_runs_in_the_worker(worker):
    result = task_functions.add_async.enqueue(20, 22)
    wait_until(lambda: finished(result), timeout=30, what="the async task to finish")
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, {"sum": 42, "ran_in_a_loop": True})


def test_a_return_value_json_cannot_carry_fails_the_task_saying_so(worker):
    result = task_functions.unserialisable.enqueue()
    wait_until(lambda: finished(result), timeout=30, what="the task to fail")
    [error] = result.errors
    assert result.status == TaskResultStatus.FAILED
    assert "The return value is a builtins.set" in error.traceback
