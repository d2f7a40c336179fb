"""Settings for the test suite: its own database (pytest-django) and its own queue names."""
from config.settings.base import *  # noqa: F403
from config.settings.base import BASE_DIR, TASKS, env

SECRET_KEY = env("DJANGO_SECRET_KEY", default="test-only-not-secret-5b8e2c7a1d4f")
CONVEYOR_QUEUE_PREFIX = env("CONVEYOR_QUEUE_PREFIX", default="test-")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# A tiny queue that no test worker consumes, for the backpressure test.
CONVEYOR_QUEUE_MAX_LENGTHS = {"held": 3}
# Fewer deliveries before a poison message is dead-lettered, so that test runs in seconds.
CONVEYOR_DELIVERY_LIMIT = env.int("CONVEYOR_DELIVERY_LIMIT", default=3)

# Webhooks may reach services on this machine (a receiver under development, a test server).
CONVEYOR_WEBHOOK_ALLOWED_PRIVATE = env.list(
    "CONVEYOR_WEBHOOK_ALLOWED_PRIVATE", default=["localhost", "127.0.0.0/8", "::1/128"]
)
# Uploads and results of the test suite's reports, apart from those of `make run`; the test
# process and its worker subprocesses read the same setting, so they share the files.
MEDIA_ROOT = env.path("DJANGO_MEDIA_ROOT", default=BASE_DIR / "var" / "test-media")
# The retry policy of a test @task (tests/tasks/task_functions.py), as Django 6.0 users set one: its @task
# decorator takes no extra arguments, so OPTIONS["TASKS"] names the function.
TASKS = {"default": {**TASKS["default"], "OPTIONS": {"TASKS": {
    "tests.tasks.task_functions.fail_twice": {"retry_on": ["builtins.ConnectionError"], "max_retries": 3,
                                              "backoff_base": 0.1, "backoff_cap": 0.2},
}}}}
# The suite floods one account on purpose (the chaos test submits 200 jobs in 20 s): limits no test reaches, so
# every submission still takes the limits' path; the tests of the limits set their own.
CONVEYOR_USER_SUBMISSIONS_PER_MINUTE = env.int("CONVEYOR_USER_SUBMISSIONS_PER_MINUTE", default=100_000)
CONVEYOR_USER_JOBS_WAITING_MAX = env.int("CONVEYOR_USER_JOBS_WAITING_MAX", default=100_000)
