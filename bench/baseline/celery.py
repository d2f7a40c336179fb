"""The baseline Celery app and its no-op task."""
from celery import Celery
from kombu import Queue

from bench.baseline import settings

# Not the current app: the harness imports this beside Conveyor's app, whose shared tasks must stay Conveyor's.
app = Celery("baseline", set_as_current=False)
app.config_from_object(settings, namespace="CELERY")
app.conf.task_queues = [Queue(settings.BASELINE_QUEUE, queue_arguments={"x-queue-type": "quorum"})]
app.conf.task_default_queue = settings.BASELINE_QUEUE


@app.task(name="bench.baseline.noop")
def noop_task() -> None:
    return None
