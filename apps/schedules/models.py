"""A schedule that submits an ordinary Conveyor job at each of its slots.

Who writes what: an operator writes the definition (name, kind, params, crontab or interval, catch-up, enabled) in
the admin; the scheduler (apps/schedules/scheduler.py, a thread of each relay) writes what happened: the next slot
due, the last slot, the recent slots with their jobs, the last error. The timing reuses django-celery-beat's
CrontabSchedule (its fields, its time zone, its admin) and IntervalSchedule; beat itself never sees these rows.
"""
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule


class JobSchedule(models.Model):
    class CatchUp(models.TextChoices):
        SKIP = "skip", "Skip missed slots"
        LAST = "last", "Run the last missed slot"

    name = models.CharField(max_length=200, unique=True)
    # A job kind, or a @task function's import path (apps/tasks); its params are checked by the kind's form.
    kind = models.CharField(max_length=100)
    params = models.JSONField(default=dict, blank=True)
    crontab = models.ForeignKey(CrontabSchedule, null=True, blank=True, on_delete=models.PROTECT,
                                help_text="Wall-clock times, evaluated in the crontab's time zone.")
    interval = models.ForeignKey(IntervalSchedule, null=True, blank=True, on_delete=models.PROTECT,
                                 help_text="A fixed period, from when the schedule was created.")
    catch_up = models.CharField(
        max_length=8, choices=CatchUp.choices, default=CatchUp.SKIP,
        help_text="When the scheduler was down past a slot: skip what was missed, or run the latest missed slot "
                  "once (never every missed one).",
    )
    enabled = models.BooleanField(default=True)
    description = models.TextField(blank=True)
    # Also where an interval's slots count from.
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    # The scheduler's facts.
    next_run_at = models.DateTimeField(null=True, blank=True)
    last_slot_at = models.DateTimeField(null=True, blank=True)
    # The newest slots first, at most CONVEYOR_SCHEDULE_RECENT of them: {"slot", "job" (id or null), "note"}.
    recent = models.JSONField(default=list, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            # The scheduler's one query per tick: enabled schedules by next slot.
            models.Index(fields=["next_run_at"], name="schedule_due", condition=Q(enabled=True)),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(crontab__isnull=False, interval__isnull=True) | Q(crontab__isnull=True,
                                                                              interval__isnull=False),
                name="schedule_crontab_or_interval",
            ),
        ]

    def __str__(self) -> str:
        return self.name
