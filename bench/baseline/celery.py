"""The baseline Celery apps, one publishing bare and one with publisher confirms, and their no-op task."""
from celery import Celery
from kombu import Queue

from bench.baseline import settings


def _baseline_app(name: str, *, transport_options: dict) -> Celery:
    # Not the current app: the harness imports this beside Conveyor's app, whose shared tasks must stay Conveyor's.
    app = Celery(name, set_as_current=False)
    app.config_from_object(settings, namespace="CELERY")
    app.conf.task_queues = [Queue(settings.BASELINE_QUEUE, queue_arguments={"x-queue-type": "quorum"})]
    app.conf.task_default_queue = settings.BASELINE_QUEUE
    app.conf.broker_transport_options = transport_options
    return app


def _noop() -> None:
    return None


app = _baseline_app("baseline", transport_options={})
# Each publish waits for RabbitMQ's confirm that the quorum queue took its message, and raises when
# it did not (kombu's confirm_publish).
confirmed_app = _baseline_app("baseline-confirmed", transport_options={"confirm_publish": True})
noop_task = app.task(name="bench.baseline.noop")(_noop)
noop_confirmed_task = confirmed_app.task(name="bench.baseline.noop")(_noop)
