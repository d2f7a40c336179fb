"""The jobs platform: Job records, the kinds registry, submission, the job task class and actions."""
from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class JobsConfig(AppConfig):
    name = "apps.jobs"
    label = "jobs"

    def ready(self) -> None:
        # Each app declares its job kinds in a `kinds` module; importing it registers them.
        autodiscover_modules("kinds")
