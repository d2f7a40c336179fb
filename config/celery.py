"""The Celery app: configured from Django settings (CELERY_*), queues from config.broker."""
import logging.config
import os

from celery import Celery
from celery.signals import celeryd_after_setup, setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")


app = Celery("conveyor")
app.config_from_object("django.conf:settings", namespace="CELERY")
# By name, so that web processes do not import the worker's parts.
app.steps["worker"].add("config.worker:CancelledTimersSweep")


@app.on_after_configure.connect
def _declare_queues(sender: Celery, **kwargs) -> None:
    from config import broker

    queues = broker.job_queues()
    sender.conf.task_queues = queues
    sender.conf.task_default_queue = queues[0].name
    sender.conf.task_default_exchange = broker.jobs_exchange().name
    sender.conf.task_default_exchange_type = "topic"
    sender.conf.task_default_routing_key = queues[0].routing_key


@celeryd_after_setup.connect
def _declare_topology(sender: str, instance, **kwargs) -> None:
    # The dead-letter queue must exist before the first message is dead-lettered to it.
    from config import broker

    with instance.app.connection_for_write() as connection:
        broker.topology_declare(connection)


@setup_logging.connect
def _log_like_django(**kwargs) -> None:
    # Workers write the same lines as the web (trace and job ids; JSON in production) and keep
    # the per-job log handler; connecting this signal stops Celery from replacing the handlers.
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
