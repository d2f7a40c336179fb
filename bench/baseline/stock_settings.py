"""Settings of the stock workers a Django team would start: Celery with django-celery-results in PostgreSQL."""
from bench.baseline.settings import *  # noqa: F403
from bench.baseline.settings import QUEUE_PREFIX, env

INSTALLED_APPS = ["django_celery_results"]
# The benchmark's database: Conveyor's migrations made django-celery-results' table there, and the
# harness counts the rows. Django's default CONN_MAX_AGE, as in a stock project; Celery's Django
# fixup closes the connection around every task anyway.
DATABASES = {"default": env.db("DATABASE_URL")}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# The drains of each stock worker: the end-to-end one with the Procfile's pool, and the real-work ones.
STOCK_QUEUES = {name: f"{QUEUE_PREFIX}stock-{name}" for name in ("results", "threads", "prefork")}

# https://docs.celeryq.dev/en/latest/django/first-steps-with-django.html#django-celery-results-using-the-django-orm-cache-as-a-result-backend
CELERY_RESULT_BACKEND = "django-db"
CELERY_TASK_IGNORE_RESULT = False
# Publisher confirms, as Conveyor's relay publishes: a message the quorum queue did not take raises.
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
