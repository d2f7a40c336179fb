"""High availability: two relays, each running the scheduler, over one schedule firing every second for a minute,
make exactly one job per slot, and miss none."""
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from django_celery_beat.models import IntervalSchedule

from apps.jobs.models import Job
from apps.schedules.models import JobSchedule
from apps.schedules.services import schedule_save
from tests.processes import queues_reset, relay_start, wait_until

pytestmark = pytest.mark.integration

SLOTS = 60


def test_two_schedulers_over_one_schedule_for_a_minute_make_exactly_one_job_per_slot(relay):
    # given two relays, each with its scheduler (the fixture's and a second one, as on a second host)
    second = relay_start()
    try:
        # when a schedule fires every second for a minute
        every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
        schedule = schedule_save(schedule=JobSchedule(name="every second", kind="diagnostics.noop", interval=every))
        jobs = Job.objects.filter(trace_id=f"schedule-{schedule.pk}")
        wait_until(lambda: jobs.count() >= SLOTS, timeout=SLOTS + 30, interval=0.5, what=f"{SLOTS} slots")
        JobSchedule.objects.filter(id=schedule.id).update(enabled=False)
    finally:
        second.stop()
        relay.stop()
        queues_reset("default")
    # then every slot from the first to the last has exactly one job: none twice, none missed
    slots = sorted(datetime.fromisoformat(key.split(":", 2)[2]) for key in jobs.values_list("idempotency_key",
                                                                                             flat=True))
    assert len(slots) >= SLOTS and len(set(slots)) == len(slots)
    assert all(b - a == timedelta(seconds=1) for a, b in pairwise(slots)), slots
    # and both schedulers were at work over it
    assert all("scheduler started" in process.output() for process in (relay, second))
