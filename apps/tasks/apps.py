"""Django's Tasks API on Conveyor: the backend, and the @task functions of every app, known in every process."""
from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class TasksConfig(AppConfig):
    name = "apps.tasks"
    label = "conveyor_tasks"
    verbose_name = "Django's Tasks API"

    def ready(self) -> None:
        # Each @task function is a job kind (apps/tasks/kinds.py), registered when its module is imported. The web
        # imports what its views use; the relay (which publishes only kinds it knows) and the workers (which run
        # only tasks they know) import each app's `tasks` module here, as Celery's autodiscover_tasks() would.
        # Functions kept elsewhere are named with `--include` to both, as for kinds.
        autodiscover_modules("tasks")
