"""High availability: two relays, each running the scheduler, over one schedule firing every second, make exactly
one job per slot and miss none. The suite runs 20 slots; `--schedule-slots 60` runs the issue's full minute."""
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from django_celery_beat.models import IntervalSchedule

from apps.jobs.models import Job
from apps.schedules.models import JobSchedule
from apps.schedules.services import schedule_save
from tests.processes import queues_reset, relay_start, wait_until

pytestmark = pytest.mark.integration


def test_two_schedulers_over_one_schedule_firing_every_second_make_exactly_one_job_per_slot(request, relay):
    slots_wanted = request.config.getoption("--schedule-slots")
    # given two relays, each with its scheduler (the fixture's and a second one, as on a second host)
    second = relay_start()
    try:
        # when a schedule fires every second for `slots_wanted` seconds
        every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
        schedule = schedule_save(schedule=JobSchedule(name="every second", kind="diagnostics.noop", interval=every))
        jobs = Job.objects.filter(trace_id=f"schedule-{schedule.pk}")
        wait_until(lambda: jobs.count() >= slots_wanted, timeout=slots_wanted + 30, interval=0.5,
                   what=f"{slots_wanted} slots")
        JobSchedule.objects.filter(id=schedule.id).update(enabled=False)
    finally:
        second.stop()
        relay.stop()
        queues_reset("default")
    # then every slot from the first to the last has exactly one job: none twice, none missed
    slots = sorted(datetime.fromisoformat(key.split(":", 2)[2]) for key in jobs.values_list("idempotency_key",
                                                                                             flat=True))
    assert len(slots) >= slots_wanted and len(set(slots)) == len(slots)
    assert all(b - a == timedelta(seconds=1) for a, b in pairwise(slots)), slots
    # and both schedulers were at work over it
    assert all("scheduler started" in process.output() for process in (relay, second))
