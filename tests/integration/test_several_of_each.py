"""Several of every process, as a deployment past one machine runs them: two relays, one publishing and one standing
by to take over; several workers sharing a queue; relays, their schedulers and a worker cut off from PostgreSQL and
carrying on once it is back. Two schedulers making one job per slot: tests/schedules/test_two_schedulers.py."""
from collections import Counter

import pytest
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule

from apps.jobs import services
from apps.jobs.models import Job, JobAttempt
from apps.schedules.models import JobSchedule
from apps.schedules.services import schedule_save
from tests.processes import jobs_run_twice_at_once, relay_start, wait_until

pytestmark = pytest.mark.integration

# The relays' pass interval in the takeover test: a standby tries the lock this often, and at each notification.
RELAY_INTERVAL_SECONDS = 2.0
PUBLISHING = "this relay publishes the outbox"
STANDING_BY = "another relay is publishing; this one stands by"


def submit(kind: str, count: int, **params) -> list[Job]:
    with transaction.atomic():
        return [services.job_submit(kind=kind, params=params, submitted_by=None)[0] for _ in range(count)]


def all_succeeded(jobs: list[Job]) -> bool:
    return Job.objects.filter(id__in=[job.id for job in jobs], status=Job.Status.SUCCEEDED).count() == len(jobs)


def test_a_standby_relay_takes_over_within_its_interval_when_the_publishing_one_is_killed(start_worker, relay):
    # given two relays over one database (two hosts, say): the first publishes, the second stands by
    relay.stop()  # the fixture's; these two pass every RELAY_INTERVAL_SECONDS
    interval = {"CONVEYOR_RELAY_INTERVAL_SECONDS": str(RELAY_INTERVAL_SECONDS)}
    first = relay_start(**interval)
    wait_until(lambda: PUBLISHING in first.output(), timeout=30, what="the first relay to publish")
    second = relay_start(**interval)
    relays = [first, second]
    try:
        wait_until(lambda: STANDING_BY in second.output(), timeout=30, what="the second relay to stand by")
        start_worker()
        before = submit("diagnostics.noop", 20)
        wait_until(lambda: all_succeeded(before), timeout=60, what="the jobs before the kill")
        # when the publishing relay is SIGKILLed (a crash, a lost host) and jobs keep coming
        first.kill()
        killed = timezone.now()
        after = submit("diagnostics.noop", 20)
        # then the standby takes the lock and publishes them, and they succeed
        wait_until(lambda: all_succeeded(after), timeout=60, what="the jobs submitted after the kill")
    finally:
        for process in relays:
            process.kill()
    published = Job.objects.filter(id__in=[job.id for job in after]).order_by("published_at").first().published_at
    takeover = (published - killed).total_seconds()
    print(f"\nRelay takeover: the first job after the kill published {takeover:.2f} s after it "
          f"(CONVEYOR_RELAY_INTERVAL_SECONDS {RELAY_INTERVAL_SECONDS:g})")
    assert second.output().index(STANDING_BY) < second.output().index(PUBLISHING)
    assert takeover <= RELAY_INTERVAL_SECONDS + 1
    assert JobAttempt.objects.filter(job__in=[*before, *after]).count() == 40


def test_three_workers_of_one_queue_share_its_jobs_and_none_runs_a_job_twice_at_once(start_worker):
    # given three workers of the default queue (three hosts, say), two jobs at once each
    workers = [start_worker(concurrency=2, ready=False) for _ in range(3)]
    for worker in workers:
        wait_until(lambda worker=worker: " ready." in worker.output(), timeout=60, what=f"{worker.name} to consume")
    # when jobs that each take a moment are submitted
    jobs = submit("diagnostics.sleep", 60, seconds=0.2, steps=1)
    wait_until(lambda: all_succeeded(jobs), timeout=90, what="every job to succeed")
    # then each worker ran a share of them, and each job ran once
    attempts = JobAttempt.objects.filter(job__in=jobs)
    by_worker = Counter(name.partition("@")[0] for name in attempts.values_list("worker", flat=True))
    print(f"\nJobs run by each worker: {dict(by_worker)}")
    assert sorted(by_worker) == sorted(worker.name for worker in workers)
    assert min(by_worker.values()) >= 5, by_worker
    assert attempts.count() == len(jobs)
    assert jobs_run_twice_at_once(Job.objects.filter(id__in=[job.id for job in jobs])) == []


def test_relays_their_schedulers_and_a_worker_cut_off_from_postgresql_carry_on_once_it_is_back(
        start_worker, relay, database_link):
    # given two relays (each with its scheduler and lifeline) and a worker, all reaching PostgreSQL through a link
    # this test cuts (PostgreSQL itself, which other test runs share, keeps running)
    relay.stop()
    linked = {"DATABASE_URL": database_link.url}
    relays = [relay_start(**linked), relay_start(**linked)]
    try:
        worker = start_worker(**linked)
        every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
        schedule = schedule_save(schedule=JobSchedule(name="every second", kind="diagnostics.noop", interval=every))
        scheduled = Job.objects.filter(trace_id=f"schedule-{schedule.pk}")
        wait_until(lambda: scheduled.filter(status=Job.Status.SUCCEEDED).count() >= 2, timeout=30,
                   what="the schedule's first jobs to run")
        # when PostgreSQL goes away for them while jobs are submitted (by a web process that still reaches it)
        database_link.down()
        try:
            during = submit("diagnostics.noop", 5)
            wait_until(lambda: all(f"{part}: PostgreSQL failed" in process.output() for process in relays
                                   for part in ("outbox relay", "Scheduler")),
                       timeout=30, what="both relays and both schedulers to meet the outage")
            cut_at = timezone.now()
        finally:
            database_link.up()
        # then, once it is back, the relays, the schedulers and the worker carry on: what was submitted meanwhile runs,
        # and the schedule makes jobs again, one per slot
        wait_until(lambda: all_succeeded(during), timeout=60, what="the jobs submitted during the outage")
        wait_until(lambda: scheduled.filter(status=Job.Status.SUCCEEDED, created_at__gt=cut_at).count() >= 2,
                   timeout=30, what="the schedule's jobs after the outage")
        JobSchedule.objects.filter(id=schedule.id).update(enabled=False)
        # having reconnected, not exited
        assert all(process.popen.poll() is None for process in [*relays, worker])
    finally:
        for process in relays:
            process.kill()
    slots = list(scheduled.values_list("idempotency_key", flat=True))
    assert len(slots) == len(set(slots))
    assert JobAttempt.objects.filter(job__in=during).count() == len(during)
