"""A job's log lines and its submitting request's trace id travel to the worker and are kept with the job."""
import pytest

from apps.jobs.models import Job
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def test_request_id_becomes_the_trace_id_on_the_job_and_every_worker_log_line_of_it(signed_in, worker):
    # given a request that sends its own X-Request-ID; when it submits a sleep job
    response = signed_in.post("/jobs/new/diagnostics.sleep/", {"seconds": "0.3", "steps": "3"},
                              HTTP_X_REQUEST_ID="trace-from-the-edge-42")
    assert response["X-Request-ID"] == "trace-from-the-edge-42"
    job = Job.objects.get()
    assert job.trace_id == "trace-from-the-edge-42"
    wait_until(lambda: Job.objects.filter(id=job.id, status="succeeded").exists(), timeout=30, what="the job")
    # then the worker's log lines of that job carry the trace id and the job id
    job_lines = [line for line in worker.output().splitlines() if "Slept step" in line]
    assert len(job_lines) == 3
    assert all(f"trace=trace-from-the-edge-42 job={job.id}" in line for line in job_lines), job_lines
    (succeeded_line,) = wait_until(
        lambda: [line for line in worker.output().splitlines() if f"[{job.id}] succeeded" in line], timeout=10,
        what="Celery's success line",
    )
    assert "trace=trace-from-the-edge-42" in succeeded_line
    # and the job keeps what it logged with its attempt, shown on its page
    (attempt,) = job.attempt_set.all()
    assert [line["message"] for line in attempt.log] == [f"Slept step {step} of 3." for step in (1, 2, 3)]
    assert "Slept step 3 of 3." in signed_in.get(f"/jobs/{job.id}/").content.decode()


def test_job_log_keeps_the_newest_lines_up_to_the_limit_after_a_marker(signed_in, start_worker):
    # given a worker that keeps 4 lines per attempt; when a job logs 10
    start_worker(CONVEYOR_JOB_LOG_MAX_LINES="4")
    signed_in.post("/jobs/new/diagnostics.sleep/", {"seconds": "0.1", "steps": "10"})
    job = wait_until(lambda: Job.objects.filter(status="succeeded").first(), timeout=30, what="the job")
    # then the newest 4 are kept, after a line that says 6 were dropped
    messages = [line["message"] for line in job.attempt_set.get().log]
    assert messages[0].startswith("… 6 earlier log lines dropped")
    assert messages[1:] == [f"Slept step {step} of 10." for step in (7, 8, 9, 10)]


def test_a_job_that_logs_nothing_stores_no_log(signed_in, worker):
    signed_in.post("/jobs/new/diagnostics.noop/", {})
    job = wait_until(lambda: Job.objects.filter(status="succeeded").first(), timeout=30, what="the job")
    assert job.attempt_set.get().log == []
