"""The scheduler's passes against the real PostgreSQL, on a frozen clock (each pass is given its `now`): jobs at the
right wall-clock times across a daylight-saving change, one job per slot however often a slot is fired, catch-up
by policy, and the admin that defines schedules and shows their runs."""
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from django_celery_beat.models import CrontabSchedule, IntervalSchedule

from apps.jobs.models import Job
from apps.schedules.models import JobSchedule
from apps.schedules.services import schedule_fire, schedule_save, schedules_fire

pytestmark = pytest.mark.django_db


def schedule_of(*, crontab: CrontabSchedule | None = None, interval: IntervalSchedule | None = None,
                now: datetime, **fields) -> JobSchedule:
    fields = {"name": "nightly", "kind": "diagnostics.noop", "params": {}, **fields}
    return schedule_save(schedule=JobSchedule(crontab=crontab, interval=interval, **fields), now=now)


def slots_of(schedule: JobSchedule) -> list[str]:
    """The slots the schedule's jobs were made for, oldest first, read from their idempotency keys."""
    keys = Job.objects.filter(trace_id=f"schedule-{schedule.pk}").values_list("idempotency_key", flat=True)
    return sorted(key.split(":", 2)[2] for key in keys)


def test_a_crontab_across_a_dst_change_makes_jobs_at_the_right_wall_clock_times():
    # given "02:30 every day" and "every hour at :00" in Europe/Paris, which springs forward on 2026-03-29
    start = datetime(2026, 3, 28, 0, 0, tzinfo=UTC)
    daily = schedule_of(crontab=CrontabSchedule.objects.create(minute="30", hour="2", timezone="Europe/Paris"),
                        now=start, name="daily")
    hourly = schedule_of(crontab=CrontabSchedule.objects.create(minute="0", hour="*", timezone="Europe/Paris"),
                         now=start, name="hourly")
    # when a scheduler runs every 10 minutes for three days (a frozen clock, moved by the test)
    now = start
    while now < start + timedelta(days=3):
        now += timedelta(minutes=10)
        schedules_fire(now=now)
    # then the daily job ran once each day, at 03:00 on the night 02:30 did not exist
    paris = daily.crontab.timezone
    walls = [datetime.fromisoformat(slot).astimezone(paris).strftime("%d %H:%M%z") for slot in slots_of(daily)]
    assert walls == ["28 02:30+0100", "29 03:00+0200", "30 02:30+0200"]
    # and the hourly one every real hour: 72 jobs in 72 hours, 02:00 missing on the night the clock jumped it
    instants = [datetime.fromisoformat(slot) for slot in slots_of(hourly)]
    assert len(instants) == 72 and all(b - a == timedelta(hours=1) for a, b in pairwise(instants))
    on_the_29th = [f"{local:%H}" for local in (instant.astimezone(paris) for instant in instants) if local.day == 29]
    assert on_the_29th[:4] == ["00", "01", "03", "04"] and len(on_the_29th) == 23


def test_firing_a_slot_twice_makes_one_job():
    # given a schedule due now; a second scheduler read it before the first one fired it
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    every = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS)
    schedule = schedule_of(interval=every, now=now - timedelta(seconds=5))
    stale = JobSchedule.objects.select_related("interval").get(id=schedule.id)
    # when both fire the same slot
    first = schedule_fire(schedule=JobSchedule.objects.select_related("interval").get(id=schedule.id), now=now)
    second = schedule_fire(schedule=stale, now=now)
    # then there is one job for it, which both record
    assert (first, second) == (1, 0)
    [job] = Job.objects.filter(trace_id=f"schedule-{schedule.pk}")
    assert job.idempotency_key == f"schedule:{schedule.pk}:2030-01-01T12:00:00+00:00" and job.submitted_by is None
    assert [entry["job"] for entry in stale.recent] == [str(job.id)]


@pytest.mark.parametrize(("catch_up", "jobs"), [("skip", 0), ("last", 1)])
def test_a_scheduler_that_was_down_catches_up_by_the_schedules_policy(catch_up, jobs):
    # given an hourly schedule whose scheduler was down over its 10:00 and 11:00 slots
    created = datetime(2030, 1, 1, 9, 0, 0, tzinfo=UTC)
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.HOURS)
    schedule = schedule_of(interval=every, now=created, catch_up=catch_up)
    # when it comes back at 11:30
    now = created + timedelta(hours=2, minutes=30)
    schedules_fire(now=now)
    # then "skip" runs neither missed slot and "last" runs the latest one, once; both go on at 12:00
    schedule.refresh_from_db()
    assert slots_of(schedule) == ["2030-01-01T11:00:00+00:00"] * jobs
    assert (schedule.last_slot_at, schedule.next_run_at) == (created + timedelta(hours=2), created + timedelta(hours=3))
    assert schedule.recent[0]["note"] == ("skipped: found 1800 s late" if catch_up == "skip" else "")


def test_a_schedule_whose_params_no_longer_fit_its_kind_says_why_and_goes_on():
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    schedule = schedule_of(interval=every, now=now - timedelta(minutes=1), kind="diagnostics.sleep",
                           params={"seconds": -1})
    assert schedules_fire(now=now) == 0
    schedule.refresh_from_db()
    assert "seconds" in schedule.last_error and schedule.next_run_at == now + timedelta(minutes=1)


def test_a_crontab_changed_on_its_own_moves_the_next_run_of_its_schedules():
    # given a schedule at 09:00; when its crontab is changed (on django-celery-beat's admin page, say) to 17:00
    crontab = CrontabSchedule.objects.create(minute="0", hour="9", timezone="UTC")
    schedule = schedule_of(crontab=crontab, now=datetime(2030, 1, 1, tzinfo=UTC))
    crontab.hour = "17"
    crontab.save()
    # then the schedule is due at 17:00
    schedule.refresh_from_db()
    assert (schedule.next_run_at.hour, schedule.next_run_at.minute) == (17, 0)


def test_a_disabled_schedule_makes_no_job():
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.MINUTES)
    schedule_of(interval=every, now=now - timedelta(minutes=1), enabled=False)
    assert schedules_fire(now=now) == 0 and Job.objects.count() == 0


def test_the_admin_defines_a_schedule_checks_its_params_and_shows_its_next_run_and_latest_jobs(admin_client):
    crontab = CrontabSchedule.objects.create(minute="0", hour="9", timezone="Europe/Paris")
    form = {"name": "morning", "kind": "diagnostics.sleep", "params": '{"seconds": "soon"}', "crontab": crontab.id,
            "catch_up": "skip", "enabled": "on"}
    # params the kind's form refuses are shown, and nothing is saved
    page = admin_client.post("/admin/schedules/jobschedule/add/", form).content.decode()
    assert "Not valid for diagnostics.sleep" in page and not JobSchedule.objects.exists()
    # valid ones are saved as the kind's form cleans them, due at the next 09:00 in Paris
    response = admin_client.post("/admin/schedules/jobschedule/add/", {**form, "params": '{"seconds": 1}'})
    assert response.status_code == 302
    schedule = JobSchedule.objects.get()
    assert schedule.params == {"seconds": 1.0, "steps": None}
    assert schedule.next_run_at.astimezone(crontab.timezone).strftime("%H:%M") == "09:00"
    # once it fired, the list shows its next run and links its latest job
    schedules_fire(now=schedule.next_run_at)
    job = Job.objects.get()
    listing = admin_client.get("/admin/schedules/jobschedule/").content.decode()
    assert f"/admin/jobs/job/{job.id}/change/" in listing and "09:00:00 CE" in listing
    detail = admin_client.get(f"/admin/schedules/jobschedule/{schedule.id}/change/").content.decode()
    assert f"/admin/jobs/job/{job.id}/change/" in detail and "queued" in detail
    assert f"?q=schedule-{schedule.id}" in detail


def test_the_admin_offers_task_functions_as_kinds(admin_client):
    page = admin_client.get("/admin/schedules/jobschedule/add/").content.decode()
    assert 'value="tests.tasks.task_functions.add"' in page and 'value="diagnostics.noop"' in page
