"""Writes of schedules: the next slot of a schedule as saved, and the scheduler's pass that fires due slots.

Each due slot submits an ordinary job through job_submit, with the idempotency key `schedule:<id>:<slot>`: jobs of
no submitter share one space of keys (apps/jobs/models.py), so however many schedulers fire a slot, at once or
one after another, it has one job. Each schedule is fired in a transaction of its own that locks its row (SKIP
LOCKED: another scheduler passes it by rather than waiting) and moves its next slot past now together with the
job's INSERT, so the work is not even attempted twice in the usual case; the key makes sure of it in every case.
"""
import logging
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.jobs.errors import IdempotencyKeyReused, JobParamsInvalid, UnknownKind
from apps.jobs.services import job_submit
from apps.schedules.models import JobSchedule
from apps.schedules.slots import Crontab, Interval

logger = logging.getLogger(__name__)


def schedule_slots(*, schedule: JobSchedule) -> Crontab | Interval:
    """The schedule's timing: its crontab in the crontab's time zone, or its interval from its creation."""
    if schedule.crontab_id is not None:
        crontab = schedule.crontab
        return Crontab.parse(minute=crontab.minute, hour=crontab.hour, day_of_month=crontab.day_of_month,
                             month_of_year=crontab.month_of_year, day_of_week=crontab.day_of_week,
                             zone=str(crontab.timezone))
    interval = schedule.interval
    start = schedule.created_at.replace(microsecond=0)
    return Interval(start=start, period=timedelta(**{interval.period: interval.every}))


def slot_key(*, schedule: JobSchedule, slot: datetime) -> str:
    """The idempotency key of the schedule's job for `slot` (UTC, to the microsecond)."""
    return f"schedule:{schedule.pk}:{slot.astimezone(UTC).isoformat()}"


def schedule_save(*, schedule: JobSchedule, now: datetime | None = None) -> JobSchedule:
    """Save an operator's schedule, due at its first slot after now (a change counts from now: slots it would
    have had before are not caught up)."""
    now = now or timezone.now()
    with transaction.atomic():
        if schedule._state.adding:
            schedule.created_at = now
        schedule.next_run_at = schedule_slots(schedule=schedule).next_after(now)
        schedule.save()
    return schedule


def schedules_timing_changed(sender, instance, **kwargs) -> None:
    """A crontab or an interval was saved: the schedules using it are due at their new next slot."""
    field = "crontab" if sender.__name__ == "CrontabSchedule" else "interval"
    for schedule in JobSchedule.objects.filter(**{field: instance}).select_related("crontab", "interval"):
        schedule.next_run_at = schedule_slots(schedule=schedule).next_after(timezone.now())
        schedule.save(update_fields=["next_run_at"])


def schedules_fire(*, now: datetime | None = None) -> int:
    """One scheduler pass: each enabled schedule whose next slot has come (at most CONVEYOR_SCHEDULE_BATCH_SIZE)
    fires; how many jobs were submitted."""
    now = now or timezone.now()
    due = JobSchedule.objects.filter(enabled=True, next_run_at__lte=now).order_by("next_run_at")
    submitted = 0
    for schedule_id in list(due.values_list("id", flat=True)[: settings.CONVEYOR_SCHEDULE_BATCH_SIZE]):
        with transaction.atomic():
            schedule = (JobSchedule.objects.select_for_update(skip_locked=True, of=("self",))
                        .select_related("crontab", "interval")
                        .filter(id=schedule_id, enabled=True, next_run_at__lte=now).first())
            if schedule is not None:  # else another scheduler has it now, or has fired it already
                submitted += schedule_fire(schedule=schedule, now=now)
    return submitted


def schedule_fire(*, schedule: JobSchedule, now: datetime) -> int:
    """Fire the schedule's latest slot at or before `now` (by its catch-up policy) and move it to its next slot;
    1 if a job was submitted. Call with the schedule's row locked."""
    slots = schedule_slots(schedule=schedule)
    slot = slots.previous_at(now)
    submitted = 0
    if slot is not None and slot >= schedule.next_run_at:
        late = (now - slot).total_seconds()
        if schedule.catch_up == JobSchedule.CatchUp.SKIP and late > settings.CONVEYOR_SCHEDULE_LATE_SECONDS:
            logger.warning("Schedule %r: slot %s skipped, found %.0f s late (its catch-up policy is to skip)",
                           schedule.name, slot.isoformat(), late)
            _recent(schedule, slot=slot, job_id=None, note=f"skipped: found {late:.0f} s late")
        else:
            submitted = _slot_submit(schedule=schedule, slot=slot)
        schedule.last_slot_at = slot
    # Past now: the slot just fired, or, when the timing changed under it, whatever comes next.
    schedule.next_run_at = slots.next_after(max(now, slot or now))
    schedule.save(update_fields=["next_run_at", "last_slot_at", "recent", "last_error"])
    return submitted


def _slot_submit(*, schedule: JobSchedule, slot: datetime) -> int:
    key = slot_key(schedule=schedule, slot=slot)
    try:
        job, created = job_submit(kind=schedule.kind, params=schedule.params, submitted_by=None,
                                  idempotency_key=key, trace_id=f"schedule-{schedule.pk}")
    except IdempotencyKeyReused:
        # The slot has its job already, submitted with the params the schedule had then.
        _recent(schedule, slot=slot, job_id=None, note="submitted before, with other params")
        return 0
    except (UnknownKind, JobParamsInvalid) as exc:
        reason = f"{exc} {getattr(exc, 'errors', '')}".strip()
        logger.error("Schedule %r: slot %s made no job: %s", schedule.name, slot.isoformat(), reason)
        schedule.last_error = f"{slot.isoformat()}: {reason}"
        _recent(schedule, slot=slot, job_id=None, note=f"no job: {reason}")
        return 0
    schedule.last_error = ""
    _recent(schedule, slot=slot, job_id=str(job.id), note="" if created else "submitted before")
    return int(created)


def _recent(schedule: JobSchedule, *, slot: datetime, job_id: str | None, note: str) -> None:
    entry = {"slot": slot.isoformat(), "job": job_id, "note": note}
    schedule.recent = [entry, *(schedule.recent or [])][: settings.CONVEYOR_SCHEDULE_RECENT]
