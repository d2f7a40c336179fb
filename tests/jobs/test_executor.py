"""The end of a delivery as Celery's worker traces it, in this process against the real PostgreSQL: what a
delivery leaves behind once it has ended."""
import gc
import re

import pytest
from billiard.einfo import ExceptionInfo
from celery import current_app
from celery.app.trace import build_tracer

from apps.jobs import lifecycle
from apps.jobs.context import job_id_var, trace_id_var
from apps.jobs.models import Job
from tests.jobs.test_lifecycle import dispatched

pytestmark = pytest.mark.django_db(transaction=True)


def delivered(kind: str, params: dict) -> tuple[Job, int]:
    """A job recorded and dispatched as the relay does; the generation its message carries."""
    job = Job(kind=kind, queue="default", params=params)
    lifecycle.job_record(job=job)
    return job, dispatched(job)


@pytest.mark.parametrize(
    ("kind", "params", "status", "celery_state", "result"),
    [
        ("diagnostics.flaky", {"failures": 1}, "retrying", "SUCCESS",
         r"'Retrying in [0-9.]+ s: TransientJobError: Planned transient failure 1 of 1\.'"),
        ("diagnostics.fail", {"message": "no"}, "failed", "REJECTED", None),
    ],
)
def test_a_delivery_that_does_not_succeed_leaves_nothing_for_the_garbage_collector(kind, params, status, celery_state,
                                                                                 result):
    # given a dispatched job whose first attempt fails, and no garbage collection while its delivery runs
    job, generation = delivered(kind, params)
    task = current_app.tasks[kind]
    trace = build_tracer(task.name, task, app=current_app, eager=True, propagate=False)
    gc.collect()
    gc.disable()
    try:
        # when the worker's tracer runs its delivery
        traced = trace(str(job.id), (str(job.id), generation), {},
                       request={"hostname": "w@test", "delivery_info": {}, "trace_id": "t-1"})
        state, retval = (traced.info.state if traced.info else "SUCCESS"), traced.retstr
        del traced  # the eager tracer hands back what the worker's drops
        # then none of Celery's copies of a traceback is still held: a retry is acknowledged without one, and a
        # failure's (Reject, into the dead queue) goes with the delivery
        held = [obj for obj in gc.get_objects() if isinstance(obj, ExceptionInfo)]
    finally:
        gc.enable()
    assert held == []
    job.refresh_from_db()
    assert job.status == status
    assert state == celery_state
    if result is not None:
        assert re.fullmatch(result, retval)  # what Celery logs and Flower shows for the delivery
    assert (trace_id_var.get(), job_id_var.get()) == ("", "")  # the logs of what the thread does next name no job


def test_a_delivery_the_fence_refuses_is_acknowledged_with_the_reason():
    # given a job whose message was already run (a duplicate delivery of a finished job)
    job, generation = delivered("diagnostics.noop", {})
    task = current_app.tasks["diagnostics.noop"]
    trace = build_tracer(task.name, task, app=current_app, eager=True, propagate=False)
    request = {"hostname": "w@test", "delivery_info": {}}
    assert trace(str(job.id), (str(job.id), generation), {}, request=request).retval == {}
    # when the same message is delivered again, then it is not run, and the delivery says why
    traced = trace(str(job.id), (str(job.id), generation), {}, request=request)
    assert traced.info is None and traced.retval == "Not run: the job has finished."
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("succeeded", 1)
