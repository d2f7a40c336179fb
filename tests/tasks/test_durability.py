"""A @task's promises when Conveyor's parts go away: a deferred task waits as a row, so it starts on time although
every Conveyor process was replaced in between; an enqueue needs no RabbitMQ, so it returns at once while
RabbitMQ is unreachable and the task runs when it is back."""
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.jobs.models import Job, JobAttempt
from apps.tasks.framework import TaskResultStatus
from tests.processes import process_ready, relay_start, wait_until
from tests.tasks import task_functions

pytestmark = pytest.mark.integration


def test_a_task_deferred_3_s_starts_on_time_although_every_process_was_replaced_in_between(start_worker, relay):
    # given a relay and a worker, and a task enqueued to run 3 s from now
    old = [relay, start_worker()]
    run_after = timezone.now() + timedelta(seconds=3)
    result = task_functions.add.using(run_after=run_after).enqueue(40, 2)
    job = Job.objects.get(id=result.id)
    assert (job.status, job.published_at) == ("scheduled", None)
    # when every Conveyor process is replaced before the task is due: new ones start, the old ones stop (a rolling
    # restart, as a deployment does it; the new relay never heard of the job, and no old process is left)
    new_relay, new_worker = relay_start(ready=False), start_worker(ready=False)
    for process in old:
        process.popen.send_signal(signal.SIGTERM)
    for process in old:
        process.popen.wait(timeout=30)
    old_gone = timezone.now()
    try:
        process_ready(new_relay, marker="outbox relay started")
        process_ready(new_worker, marker=" ready.")
        wait_until(lambda: JobAttempt.objects.filter(job=job).exists(), timeout=30, what="the task to start")
    finally:
        new_relay.stop()
    # then no process that saw the task enqueued was left when it fell due, and it started on time: not before
    # its run_after, and within 2 s after
    assert old_gone < run_after, "the old processes took longer to stop than the deferral; nothing was tested"
    started = JobAttempt.objects.get(job=job).started_at
    assert run_after <= started <= run_after + timedelta(seconds=2), started - run_after
    wait_until(lambda: Job.objects.get(id=job.id).is_finished, timeout=30, what="the task to finish")
    assert task_functions.add.get_result(result.id).return_value == 42


def test_an_enqueue_while_rabbitmq_is_unreachable_returns_at_once_and_the_task_runs_once_it_is_back(
        start_worker, relay, broker_link):
    # given a worker, and a relay that reaches RabbitMQ only through a link the test cuts
    start_worker()
    relay.stop()
    linked = relay_start(CELERY_BROKER_URL=broker_link.url)
    try:
        broker_link.down()
        # when a task is enqueued while the relay cannot reach RabbitMQ
        began = time.monotonic()
        result = task_functions.add.enqueue(1, 2)
        took = time.monotonic() - began
        # then the TaskResult comes back at once, and the job waits in the outbox while the relay keeps trying
        assert took < 0.5 and result.status == TaskResultStatus.READY
        wait_until(lambda: Job.objects.get(id=result.id).generation >= 2, timeout=30,
                   what="the relay to try twice and fail")
        assert Job.objects.get(id=result.id).published_at is None
        # and once RabbitMQ is reachable again, the task runs, once
        broker_link.up()
        wait_until(lambda: Job.objects.get(id=result.id).is_finished, timeout=60, what="the task to run")
    finally:
        linked.stop()
    result.refresh()
    assert (result.status, result.return_value, result.attempts) == (TaskResultStatus.SUCCESSFUL, 3, 1)
    assert "the rest stay in the outbox" in linked.output()
