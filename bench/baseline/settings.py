"""Settings of the baseline web and of its results-off worker: no database, no middleware, no results."""
import environ

# The baseline is its own small project, so it reads the variables it shares with Conveyor itself.
env = environ.Env()

SECRET_KEY = "bench-baseline-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench.baseline.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
USE_TZ = True

QUEUE_PREFIX = env("CONVEYOR_QUEUE_PREFIX", default="bench-")
BASELINE_QUEUE = f"{QUEUE_PREFIX}baseline"

# Stock Celery with the delivery guarantees Conveyor's worker has (acks_late, a bounded prefetch, a
# quorum queue), so the comparison isolates what Conveyor adds: confirms, the Job row, results. The
# harness gives each worker its pool, concurrency and prefetch on its command line (bench/measure.py).
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="amqp://guest:guest@127.0.0.1:5672//")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
