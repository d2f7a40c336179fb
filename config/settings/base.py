"""Settings shared by every environment; every value is read from the environment through `env`."""
from datetime import timedelta
from pathlib import Path

import django
import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A .env file at the repository root is optional; real environment variables win over it.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_celery_results",
    "django_celery_beat",
    "apps.ops",
    "apps.jobs",
    "apps.diagnostics",
    "apps.webhooks",
    "apps.reports",
    "apps.accounts",
    "apps.notifications",
    "apps.tasks",
    "apps.schedules",
    # Django's Tasks API is part of Django from 6.0 (django.tasks); before, the django-tasks package brings it.
    *(["django_tasks"] if django.VERSION < (6, 0) else []),
]

MIDDLEWARE = [
    "apps.ops.middleware.RequestIdMiddleware",
    "apps.ops.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/conveyor")}
# Keep connections open between requests and tasks; a new PostgreSQL connection costs milliseconds.
# https://docs.djangoproject.com/en/5.2/ref/databases/#persistent-connections
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DJANGO_CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "jobs:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
MEDIA_ROOT = env.path("DJANGO_MEDIA_ROOT", default=BASE_DIR / "media")

# Largest request body the API and forms accept; a larger one gets 413.
# https://docs.djangoproject.com/en/5.2/ref/settings/#data-upload-max-memory-size
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("CONVEYOR_MAX_REQUEST_BYTES", default=256 * 1024)

# --- Logs ------------------------------------------------------------------
# How log lines are written: "text" (readable, for a terminal) or "json" (one object per line, the
# production default, for a log collector). Web and worker lines carry the trace id and job id.
CONVEYOR_LOG_FORMAT = env("CONVEYOR_LOG_FORMAT", default="text")
# Log lines kept with each attempt of a job and shown on its page; older lines are dropped and a
# marker says how many. The worker holds at most this many in memory while the attempt runs.
CONVEYOR_JOB_LOG_MAX_LINES = env.int("CONVEYOR_JOB_LOG_MAX_LINES", default=200)
# Characters kept of one job log line (a traceback included); the rest is cut with a note.
CONVEYOR_JOB_LOG_MAX_LINE_CHARS = env.int("CONVEYOR_JOB_LOG_MAX_LINE_CHARS", default=4000)
# Celery workers use this configuration too (config/celery.py), not Celery's own log format.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "apps.ops.log.LogContextFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [trace=%(trace_id)s job=%(job_id)s] %(message)s"},
        "json": {"()": "apps.ops.log.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": CONVEYOR_LOG_FORMAT, "filters": ["context"]},
        "job_log": {"class": "apps.jobs.logs.JobLogHandler"},
    },
    "root": {"handlers": ["console", "job_log"], "level": env("DJANGO_LOG_LEVEL", default="INFO")},
}

# --- Broker topology -------------------------------------------------------
# Names of queues, exchanges and the dead-letter queue start with this prefix, so the
# test suite's queues never touch those of a running `make run`.
CONVEYOR_QUEUE_PREFIX = env("CONVEYOR_QUEUE_PREFIX", default="")
# The job queues; each kind names one of them. A worker consumes the queues it is given with -Q.
CONVEYOR_QUEUES = env.list("CONVEYOR_QUEUES", default=["default", "reports"])
# Most messages a job queue holds; past it RabbitMQ refuses publishes (x-overflow reject-publish)
# and new jobs wait in the outbox. Fixed when the queue is first declared.
# https://www.rabbitmq.com/docs/maxlength
CONVEYOR_QUEUE_MAX_LENGTH = env.int("CONVEYOR_QUEUE_MAX_LENGTH", default=100_000)
# Per-queue exceptions to that limit, e.g. "reports=1000,default=200000".
CONVEYOR_QUEUE_MAX_LENGTHS = env.dict("CONVEYOR_QUEUE_MAX_LENGTHS", cast={"value": int}, default={})
# Deliveries of one message before RabbitMQ dead-letters it (a message that kills its worker).
# https://www.rabbitmq.com/docs/quorum-queues#poison-message-handling
CONVEYOR_DELIVERY_LIMIT = env.int("CONVEYOR_DELIVERY_LIMIT", default=5)

# --- Celery ----------------------------------------------------------------
# Every CELERY_* name maps to the lower-case Celery setting of the same name.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="amqp://guest:guest@127.0.0.1:5672//")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publisher confirms: a publish returns only once RabbitMQ has taken the message.
# https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.transport.pyamqp.html
# max_retries/interval_start: when RabbitMQ is down a publish gives up at once (one quick retry)
# instead of holding the request for seconds; the job waits in the outbox for the relay.
# https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.html#kombu.Connection.default_channel
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True, "max_retries": 1, "interval_start": 0}
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
# Celery's own tasks (celery.backend_cleanup, and any plain Celery task of yours) keep their results in
# django-celery-results' TaskResult table, shown in the admin. Jobs do not: a job's outcome is its own rows
# (apps/jobs/models.py), which nothing Celery cleans up can take away.
CELERY_RESULT_BACKEND = "django-db"
# Store task name, args, worker and queue with each result so the admin can show them.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#result-extended
CELERY_RESULT_EXTENDED = True
CELERY_TASK_TRACK_STARTED = True
# Acknowledge after the task ran and its outcome is stored; a killed worker's message is delivered again.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-acks-late
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A failed task's message is rejected rather than acknowledged, so RabbitMQ dead-letters it.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-acks-on-failure
CELERY_TASK_ACKS_ON_FAILURE = False
# A job killed at its hard time limit (it ignored the soft one) is requeued like one whose worker died: the
# next delivery records the attempt lost, and after CONVEYOR_DELIVERY_LIMIT such attempts the job fails.
CELERY_TASK_ACKS_ON_TIMEOUT = False
# How each queue's jobs run (`python manage.py run_worker QUEUE` starts its worker so; config/worker.py):
# "threads" runs many jobs at once in one process, for jobs that wait on the network (webhooks, email, the
# default queue), with Conveyor's own time limits; "prefork" runs each job in a process of its own, for jobs
# that use the CPU (reports), with Celery's. A queue not listed runs "threads".
CONVEYOR_QUEUE_POOLS = env.dict("CONVEYOR_QUEUE_POOLS", default={"default": "threads", "reports": "prefork"})
# Jobs one worker of each queue runs at once (threads, or processes); a queue not listed: 32. Each running job
# holds a PostgreSQL connection: keep the sum over all workers, with the web's, below max_connections.
CONVEYOR_QUEUE_CONCURRENCY = env.dict("CONVEYOR_QUEUE_CONCURRENCY", cast={"value": int},
                                      default={"default": 32, "reports": 1})
# Messages a worker holds beyond those it runs, as a multiple of its concurrency: 1 holds none extra (a long
# report never waits in a worker's buffer), 2 keeps a thread-pool worker fed between jobs. Not listed: 2.
# https://docs.celeryq.dev/en/stable/userguide/optimizing.html#prefetch-limits
CONVEYOR_QUEUE_PREFETCH_MULTIPLIERS = env.dict("CONVEYOR_QUEUE_PREFETCH_MULTIPLIERS", cast={"value": int},
                                               default={"default": 2, "reports": 1})
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Task events let Flower show received, started and finished tasks; the worker's consumer publishes
# them without waiting for confirms (config/worker.py). No "sent" event: the relay publishes
# thousands of jobs a second, and a job waiting in its queue is shown by the admin and its page.
# https://docs.celeryq.dev/en/stable/userguide/monitoring.html#events
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_WORKER_CONSUMER = "config.worker:JobConsumer"
CELERY_TASK_SEND_SENT_EVENT = False
# Global limits; each job kind may set shorter ones.
# https://docs.celeryq.dev/en/stable/userguide/workers.html#time-limits
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CONVEYOR_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CONVEYOR_TASK_TIME_LIMIT", default=330)
# On SIGTERM, running tasks get this many seconds to finish before their messages are requeued.
# https://docs.celeryq.dev/en/stable/userguide/workers.html#soft-shutdown
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env.float("CONVEYOR_WORKER_SOFT_SHUTDOWN_TIMEOUT", default=20.0)
# An idle worker stops at once: no job waits in its memory (a retry's backoff waits in the outbox).
CELERY_WORKER_ENABLE_SOFT_SHUTDOWN_ON_IDLE = False
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# A pool process whose resident memory passed this many KiB is replaced once its task has ended.
# Every attempt that ends in an exception (a retry, a failure) leaves a process a little bigger
# (the benchmark's backlog test: 500 retries took each from 74 to 190 MiB); a fresh one is ~74 MiB.
# https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-max-memory-per-child
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env.int("CONVEYOR_WORKER_MAX_MEMORY_PER_CHILD_KB", default=96 * 1024)
# A thread-pool worker whose resident memory passes this many KiB stops taking jobs, finishes those it has and
# exits, for its supervisor (compose's restart policy, systemd) to start it again. Its memory is otherwise
# bounded by its concurrency and prefetch; the benchmark's backlog test measures it.
CONVEYOR_WORKER_MAX_MEMORY_KB = env.int("CONVEYOR_WORKER_MAX_MEMORY_KB", default=512 * 1024)
# A job of a thread-pool worker still running at its hard time limit is failed and its thread given up on (a
# thread cannot be killed); its slot goes to a new thread. Past this many such threads the worker restarts.
CONVEYOR_WORKER_ABANDONED_THREADS_MAX = env.int("CONVEYOR_WORKER_ABANDONED_THREADS_MAX", default=4)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# --- Outcomes and retention ------------------------------------------------
# Days a finished job (succeeded, failed or cancelled) is kept with its attempts, results, logs and files;
# the lifeline prunes older ones. Celery's daily celery.backend_cleanup (installed by beat's scheduler)
# expires Celery's own TaskResult rows after the same time.
CONVEYOR_JOB_RETENTION_DAYS = env.int("CONVEYOR_JOB_RETENTION_DAYS", default=30)
CELERY_RESULT_EXPIRES = timedelta(days=CONVEYOR_JOB_RETENTION_DAYS)
# Finished jobs deleted per lifeline pass; each is a few rows and its kind's files.
CONVEYOR_RETENTION_BATCH_SIZE = env.int("CONVEYOR_RETENTION_BATCH_SIZE", default=1000)
# Largest result a job may return, in bytes of JSON; a larger one fails the job with a message saying so.
CONVEYOR_JOB_RESULT_MAX_BYTES = env.int("CONVEYOR_JOB_RESULT_MAX_BYTES", default=64 * 1024)

# --- Outbox relay and lifeline ---------------------------------------------
# The relay publishes a job as soon as PostgreSQL tells it one was committed (LISTEN/NOTIFY); it
# also makes a pass this often, for jobs RabbitMQ refused (a full queue) or could not take (down).
CONVEYOR_RELAY_INTERVAL_SECONDS = env.float("CONVEYOR_RELAY_INTERVAL_SECONDS", default=1.0)
# Jobs published per pass, their confirms in flight together; bounds the relay's memory and how
# many jobs one lost confirm can leave to be published again.
CONVEYOR_RELAY_BATCH_SIZE = env.int("CONVEYOR_RELAY_BATCH_SIZE", default=500)
# Seconds the relay (and a re-drive) waits for RabbitMQ to confirm a batch; what is not confirmed
# by then stays in the outbox for the next pass.
CONVEYOR_PUBLISH_CONFIRM_TIMEOUT_SECONDS = env.float("CONVEYOR_PUBLISH_CONFIRM_TIMEOUT_SECONDS", default=10.0)
# The lifeline (apps/jobs/reconciler.py, a thread of each relay process) runs a pass this often: it finds
# jobs whose message RabbitMQ no longer holds, and prunes jobs past their retention.
CONVEYOR_RECONCILE_INTERVAL_SECONDS = env.float("CONVEYOR_RECONCILE_INTERVAL_SECONDS", default=60.0)
# A waiting job published this long ago that never started, in a queue holding fewer messages than such jobs,
# or a running job this long past its hard time limit with no live attempt, is dispatched again.
CONVEYOR_RECONCILE_AFTER_SECONDS = env.float("CONVEYOR_RECONCILE_AFTER_SECONDS", default=300.0)
# Most jobs one pass dispatches again.
CONVEYOR_RECONCILE_BATCH_SIZE = env.int("CONVEYOR_RECONCILE_BATCH_SIZE", default=1000)
# Seconds before a job is dispatched again when its message came while an earlier attempt still held it
# (cancelled by an operator, not stopped yet, then retried).
CONVEYOR_JOB_BUSY_RETRY_SECONDS = env.float("CONVEYOR_JOB_BUSY_RETRY_SECONDS", default=2.0)

# --- Deferred jobs, schedules, Django's Tasks API --------------------------
# A job's run_after may be this many seconds in the past (it then runs now); further back it is refused as a
# likely mistake (a wrong time zone), with a message saying so.
CONVEYOR_RUN_AFTER_MAX_PAST_SECONDS = env.float("CONVEYOR_RUN_AFTER_MAX_PAST_SECONDS", default=300.0)
# A job's run_after may be at most this many days ahead.
CONVEYOR_RUN_AFTER_MAX_DAYS = env.int("CONVEYOR_RUN_AFTER_MAX_DAYS", default=365)
# Each relay process runs the scheduler (apps/schedules) in a thread: it looks for due schedules at least this
# often (and sleeps until the next slot when that is sooner), so a new or changed schedule counts within it.
CONVEYOR_SCHEDULE_TICK_SECONDS = env.float("CONVEYOR_SCHEDULE_TICK_SECONDS", default=1.0)
# A slot found this many seconds late (the scheduler was down or stopped) is missed: a schedule whose catch-up
# policy is "skip" does not run it; one whose policy is "last" runs the latest missed slot once.
CONVEYOR_SCHEDULE_LATE_SECONDS = env.float("CONVEYOR_SCHEDULE_LATE_SECONDS", default=60.0)
# Most schedules fired by one scheduler pass, each in a transaction of its own.
CONVEYOR_SCHEDULE_BATCH_SIZE = env.int("CONVEYOR_SCHEDULE_BATCH_SIZE", default=100)
# Recent slots each schedule keeps with their jobs (or why none was made), for the admin.
CONVEYOR_SCHEDULE_RECENT = env.int("CONVEYOR_SCHEDULE_RECENT", default=10)
# Django's Tasks API (django.tasks on Django 6.0+, the django-tasks package before): @task functions become
# Conveyor jobs. QUEUES are the Conveyor queues a @task may name; OPTIONS set every @task's retry policy and
# time limits unless the decorator or OPTIONS["TASKS"][<function path>] says otherwise (README, "Using Django's
# Tasks API"). https://docs.djangoproject.com/en/6.0/topics/tasks/
TASKS = {
    "default": {
        "BACKEND": "apps.tasks.backend.ConveyorBackend",
        "QUEUES": CONVEYOR_QUEUES,
        "OPTIONS": {},
    },
}

# --- Pages and API ---------------------------------------------------------
CONVEYOR_PAGE_SIZE = env.int("CONVEYOR_PAGE_SIZE", default=25)
CONVEYOR_API_MAX_PAGE_SIZE = env.int("CONVEYOR_API_MAX_PAGE_SIZE", default=200)
# Deepest page of a job list (pages and API): a page reads past every job before it, so a deeper one costs more;
# filters (status, kind) reach older jobs. The API answers 400 past it, the pages show this page.
CONVEYOR_MAX_PAGE = env.int("CONVEYOR_MAX_PAGE", default=1000)
# Seconds each web process remembers a good API token (and its user) instead of reading it again;
# deleting a token or deactivating its user takes effect within this time. 0 reads it every time.
CONVEYOR_API_TOKEN_CACHE_SECONDS = env.float("CONVEYOR_API_TOKEN_CACHE_SECONDS", default=10.0)

# --- Per-user limits (apps/jobs/limits.py, apps/accounts) ------------------
# So that one account cannot take the system from the others; staff are exempt, and so are jobs of no submitter.
# Jobs one user may submit a minute: that many at once, then one every 60/N seconds (a token bucket); past it a
# submission answers 429 with Retry-After (the form shows the same message). 0: no limit.
CONVEYOR_USER_SUBMISSIONS_PER_MINUTE = env.int("CONVEYOR_USER_SUBMISSIONS_PER_MINUTE", default=60)
# Jobs of one user that may wait to run at once (queued, scheduled or retrying); past it a submission answers 429
# until some have started. Each submission counts up to this many of the user's waiting jobs in an index. 0: no limit.
CONVEYOR_USER_JOBS_WAITING_MAX = env.int("CONVEYOR_USER_JOBS_WAITING_MAX", default=1000)
# Whether anyone may create an account at /accounts/signup/; false: the page says sign-up is closed and creates
# nothing (accounts are then made by an administrator). Accounts waiting for verification can still verify.
CONVEYOR_SIGNUP_OPEN = env.bool("CONVEYOR_SIGNUP_OPEN", default=True)

# --- Operator console: admin, dashboard, Flower, metrics -------------------
# The admin's job list counts at most this many matches ("10000" then means "at least"): an exact
# COUNT(*) over millions of jobs takes seconds on every page.
CONVEYOR_ADMIN_COUNT_LIMIT = env.int("CONVEYOR_ADMIN_COUNT_LIMIT", default=10_000)
# Most jobs one admin action (retry, cancel) takes; each is its own transaction and publish.
CONVEYOR_ADMIN_ACTION_LIMIT = env.int("CONVEYOR_ADMIN_ACTION_LIMIT", default=1000)
# Where operators open Flower, and the path prefix Flower serves under (Flower reads the same
# FLOWER_URL_PREFIX); the admin links each job to {CONVEYOR_FLOWER_URL}/{prefix}/task/<id>.
# https://flower.readthedocs.io/en/latest/config.html#url-prefix
CONVEYOR_FLOWER_URL = env("CONVEYOR_FLOWER_URL", default="http://127.0.0.1:5555")
FLOWER_URL_PREFIX = env("FLOWER_URL_PREFIX", default="")
# RabbitMQ's management API (Flower reads the same FLOWER_BROKER_API): the dashboard and /metrics
# take unacknowledged counts from it. Where it does not answer they ask RabbitMQ over AMQP, which
# tells ready messages only. `make services` enables the plugin on a local RabbitMQ.
# https://www.rabbitmq.com/docs/management#http-api
CONVEYOR_BROKER_API = env("FLOWER_BROKER_API", default="http://guest:guest@127.0.0.1:15672/api/")
# The bearer token Prometheus sends to GET /metrics; unset, /metrics answers 403.
CONVEYOR_METRICS_TOKEN = env("CONVEYOR_METRICS_TOKEN", default="")
# Celery's Django fixup closes database connections after every task unless this is set; reusing
# them saves a connect per task. It counts tasks per connection before a recycle.
# https://github.com/celery/celery/blob/main/celery/fixups/django.py
CELERY_DB_REUSE_MAX = env.int("CONVEYOR_WORKER_DB_REUSE_MAX", default=1000)
# While PostgreSQL is unreachable, a worker waits for it this long, holding the job's message, to start or to
# record an attempt; then the message goes back to RabbitMQ to run later. Never dead-lettered for it.
CONVEYOR_WORKER_DB_WAIT_SECONDS = env.float("CONVEYOR_WORKER_DB_WAIT_SECONDS", default=120.0)
# When PostgreSQL went away under a job's own code, seconds before its next attempt (no retry is spent).
CONVEYOR_WORKER_DB_RETRY_SECONDS = env.float("CONVEYOR_WORKER_DB_RETRY_SECONDS", default=5.0)
# While PostgreSQL is unreachable, an API request waits for it this long, then answers 503.
CONVEYOR_WEB_DB_WAIT_SECONDS = env.float("CONVEYOR_WEB_DB_WAIT_SECONDS", default=10.0)

# --- Webhooks (apps.webhooks) ----------------------------------------------
# Seconds a delivery waits to connect to an endpoint, then for its answer.
CONVEYOR_WEBHOOK_CONNECT_TIMEOUT = env.float("CONVEYOR_WEBHOOK_CONNECT_TIMEOUT", default=3.0)
CONVEYOR_WEBHOOK_READ_TIMEOUT = env.float("CONVEYOR_WEBHOOK_READ_TIMEOUT", default=10.0)
# Host names and networks (CIDR) webhooks may reach although they are loopback, private,
# link-local or reserved addresses (the SSRF guard refuses those otherwise).
CONVEYOR_WEBHOOK_ALLOWED_PRIVATE = env.list("CONVEYOR_WEBHOOK_ALLOWED_PRIVATE", default=[])
# Retries of a delivery after the first attempt, and their backoff in seconds: full jitter up to
# min(cap, base * 2**retry); an endpoint's longer Retry-After wins, still up to the cap.
CONVEYOR_WEBHOOK_MAX_RETRIES = env.int("CONVEYOR_WEBHOOK_MAX_RETRIES", default=8)
CONVEYOR_WEBHOOK_BACKOFF_BASE = env.float("CONVEYOR_WEBHOOK_BACKOFF_BASE", default=2.0)
CONVEYOR_WEBHOOK_BACKOFF_CAP = env.float("CONVEYOR_WEBHOOK_BACKOFF_CAP", default=3600.0)
# Largest event payload, in bytes of JSON.
CONVEYOR_WEBHOOK_MAX_PAYLOAD_BYTES = env.int("CONVEYOR_WEBHOOK_MAX_PAYLOAD_BYTES", default=64 * 1024)
# Bytes of each response body kept with its attempt and shown on the job page.
CONVEYOR_WEBHOOK_RESPONSE_EXCERPT_BYTES = env.int("CONVEYOR_WEBHOOK_RESPONSE_EXCERPT_BYTES", default=1024)

# --- Reports (apps.reports) ------------------------------------------------
# Largest CSV a report accepts, in bytes; a larger upload is refused with a field error.
CONVEYOR_REPORT_MAX_UPLOAD_BYTES = env.int("CONVEYOR_REPORT_MAX_UPLOAD_BYTES", default=200 * 1024 * 1024)
# Bytes read from the file at a time: the worker's memory for the file, whatever its size.
CONVEYOR_REPORT_CHUNK_BYTES = env.int("CONVEYOR_REPORT_CHUNK_BYTES", default=64 * 1024)
# Seconds between progress reports while a report reads its file.
CONVEYOR_REPORT_PROGRESS_SECONDS = env.float("CONVEYOR_REPORT_PROGRESS_SECONDS", default=0.5)
# Most distinct groups in one report; each holds a few numbers in the worker's memory.
CONVEYOR_REPORT_MAX_GROUPS = env.int("CONVEYOR_REPORT_MAX_GROUPS", default=100_000)
# Seconds a report may run (soft limit; the hard limit is 30 s later).
CONVEYOR_REPORT_TIME_LIMIT = env.int("CONVEYOR_REPORT_TIME_LIMIT", default=1800)

# --- Sign-up and email (apps.accounts, apps.notifications) -----------------
# How mail leaves: smtp://user:password@host:port, smtp+tls:// or smtp+ssl:// (django-environ).
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-email-url
vars().update(env.email_url("EMAIL_URL", default="smtp://127.0.0.1:25"))
# Seconds to connect to the mail server and for each reply; past it the send is retried.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Conveyor <noreply@conveyor.local>")
# The site's address as users reach it, for links in emails.
CONVEYOR_SITE_URL = env("CONVEYOR_SITE_URL", default="http://127.0.0.1:8000")
# Seconds a verification link stays valid.
CONVEYOR_VERIFICATION_MAX_AGE = env.int("CONVEYOR_VERIFICATION_MAX_AGE", default=2 * 24 * 3600)
# Seconds before another verification email may be sent to the same account.
CONVEYOR_VERIFICATION_RESEND_SECONDS = env.int("CONVEYOR_VERIFICATION_RESEND_SECONDS", default=60)
# Retries of an email the server refused for now (4xx, no connection), and their backoff in seconds.
CONVEYOR_EMAIL_MAX_RETRIES = env.int("CONVEYOR_EMAIL_MAX_RETRIES", default=6)
CONVEYOR_EMAIL_BACKOFF_BASE = env.float("CONVEYOR_EMAIL_BACKOFF_BASE", default=5.0)
CONVEYOR_EMAIL_BACKOFF_CAP = env.float("CONVEYOR_EMAIL_BACKOFF_CAP", default=900.0)
