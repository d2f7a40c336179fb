"""The end of a delivery as Celery's worker traces it, in this process against the real PostgreSQL: what a
delivery leaves behind once it has ended."""
import gc

import pytest
from billiard.einfo import ExceptionInfo
from celery import current_app
from celery.app.trace import build_tracer

from apps.jobs import lifecycle
from apps.jobs.context import job_id_var, trace_id_var
from apps.jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


def delivered(kind: str, params: dict) -> tuple[Job, int]:
    """A job recorded and dispatched as the relay does; the generation its message carries."""
    job = Job(kind=kind, queue="default", params=params)
    lifecycle.job_record(job=job)
    [dispatch] = [d for d in lifecycle.dispatch_claim(kinds=[kind], limit=100) if d.job_id == job.id]
    lifecycle.dispatch_confirm(dispatches=[dispatch])
    return job, dispatch.generation


@pytest.mark.parametrize(
    ("kind", "params", "status"),
    [("diagnostics.flaky", {"failures": 1}, "retrying"), ("diagnostics.fail", {"message": "no"}, "failed")],
)
def test_a_delivery_that_does_not_succeed_leaves_no_traceback_for_the_garbage_collector(kind, params, status):
    # given a dispatched job whose first attempt fails (a retry leaves the trace through Ignore, a failure
    # through Reject), and no garbage collection while its delivery runs
    job, generation = delivered(kind, params)
    task = current_app.tasks[kind]
    trace = build_tracer(task.name, task, app=current_app, eager=True, propagate=False)
    gc.collect()
    gc.disable()
    try:
        # when the worker's tracer runs its delivery
        trace(str(job.id), (str(job.id), generation), {},
              request={"hostname": "w@test", "delivery_info": {}, "trace_id": "t-1"})
        # then the outcome is stored, and none of Celery's copies of the traceback is still held
        held = [obj for obj in gc.get_objects() if isinstance(obj, ExceptionInfo)]
    finally:
        gc.enable()
    job.refresh_from_db()
    assert job.status == status
    assert held == []
    assert (trace_id_var.get(), job_id_var.get()) == ("", "")  # the logs of what the thread does next name no job
