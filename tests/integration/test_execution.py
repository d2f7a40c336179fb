"""How a queue's jobs run: many at once in a thread-pool worker, with the time limits, the database sessions and the
memory ceiling the prefork pool gave for free."""
import pytest
from django.db import connection, transaction

from apps.jobs import services
from apps.jobs.models import Job, JobAttempt
from tests.processes import wait_until

pytestmark = pytest.mark.integration


def submit(kind: str, **params) -> Job:
    with transaction.atomic():
        job, _ = services.job_submit(kind=kind, params=params, submitted_by=None)
    return job


def succeeded(jobs: list[Job]) -> bool:
    return Job.objects.filter(id__in=[job.id for job in jobs], status="succeeded").count() == len(jobs)


def sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_a_thread_pool_worker_runs_its_concurrency_of_jobs_at_once_on_as_many_sessions(start_worker):
    # given a worker of the default queue (threads) running 8 jobs at once
    before = sessions()
    start_worker(concurrency=8)
    # when 16 jobs that each sleep a second are submitted
    jobs = [submit("diagnostics.sleep", seconds=1, steps=2) for _ in range(16)]
    wait_until(lambda: succeeded(jobs), timeout=60, what="the 16 jobs")
    # then 8 of them ran at the same moment, and the worker used no more PostgreSQL sessions than that
    spans = list(JobAttempt.objects.filter(job__in=jobs).values_list("started_at", "finished_at"))
    overlap = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
    assert overlap == 8
    assert sessions() - before <= 8


def test_a_job_past_its_soft_time_limit_in_a_thread_fails_with_the_usual_message(start_worker):
    start_worker(CONVEYOR_TASK_SOFT_TIME_LIMIT="1", CONVEYOR_TASK_TIME_LIMIT="30")
    job = submit("diagnostics.sleep", seconds=20, steps=40)
    wait_until(lambda: Job.objects.filter(id=job.id, status="failed").exists(), timeout=30, what="the job to fail")
    job.refresh_from_db()
    assert job.error == "The job ran longer than its time limit of 1 seconds."
    assert job.progress < 100


def test_a_job_past_its_hard_time_limit_is_failed_and_its_slot_goes_to_a_new_thread(start_worker, tmp_path):
    # given a worker with one thread, and a job that ignores its soft time limit
    worker = start_worker(concurrency=1, CONVEYOR_TASK_SOFT_TIME_LIMIT="1", CONVEYOR_TASK_TIME_LIMIT="2")
    gate = tmp_path / "gate"
    stuck = submit("tests.stubborn", path=str(gate))
    try:
        wait_until(lambda: gate.with_suffix(".soft").exists(), timeout=30, what="the soft limit, ignored")
        # when its hard limit passes, then the job fails, the worker gives up on its thread
        wait_until(lambda: Job.objects.filter(id=stuck.id, status="failed").exists(), timeout=30,
                   what="the stuck job to fail")
        assert "hard time limit of 2 seconds" in Job.objects.get(id=stuck.id).error
        # and the next job runs at once, on a new thread, though the only one is still stuck
        after = submit("diagnostics.noop")
        wait_until(lambda: succeeded([after]), timeout=30, what="the next job")
    finally:
        gate.touch()
    assert "gave up on it" in worker.output()


def test_a_thread_pool_worker_past_its_memory_ceiling_finishes_and_exits(start_worker):
    worker = start_worker(CONVEYOR_WORKER_MAX_MEMORY_KB="1")
    wait_until(lambda: worker.popen.poll() is not None, timeout=30, what="the worker to exit")
    assert "over CONVEYOR_WORKER_MAX_MEMORY_KB" in worker.output()


def test_a_result_over_the_limit_fails_the_job_saying_so_and_one_within_it_is_kept(start_worker):
    start_worker(CONVEYOR_JOB_RESULT_MAX_BYTES="100")
    small, large = submit("tests.big_result", size=10), submit("tests.big_result", size=1000)
    wait_until(lambda: Job.objects.filter(id__in=[small.id, large.id], status__in=Job.FINISHED).count() == 2,
               timeout=30, what="both jobs to finish")
    assert JobAttempt.objects.get(job=small).result == {"blob": "x" * 10}
    large.refresh_from_db()
    assert large.status == "failed" and "the limit is 100 bytes (CONVEYOR_JOB_RESULT_MAX_BYTES)" in large.error
