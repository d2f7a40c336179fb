"""Job schedules: crontabs and intervals (django-celery-beat's) that submit Conveyor jobs."""
from django.apps import AppConfig
from django.db.models.signals import post_save


class SchedulesConfig(AppConfig):
    name = "apps.schedules"
    label = "schedules"
    verbose_name = "Job schedules"

    def ready(self) -> None:
        from django_celery_beat.models import CrontabSchedule, IntervalSchedule

        from apps.schedules.services import schedules_timing_changed

        # A crontab or an interval edited on its own admin page moves the next run of the schedules using it.
        for model in (CrontabSchedule, IntervalSchedule):
            post_save.connect(schedules_timing_changed, sender=model, dispatch_uid=f"schedules-{model.__name__}")
