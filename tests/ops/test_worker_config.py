"""How the worker talks to RabbitMQ: job messages wait for confirms, monitoring events do not."""
from types import SimpleNamespace

from config.celery import app as celery_app
from config.worker import JobConsumer


def test_the_workers_event_connection_skips_confirms_that_every_other_connection_keeps():
    # given the consumer class the worker runs (CELERY_WORKER_CONSUMER)
    assert celery_app.conf.worker_consumer == "config.worker:JobConsumer"
    consumer = SimpleNamespace(app=celery_app, ensure_connected=lambda connection: connection)
    # when it opens its connection for writing (the event dispatcher's), and the app opens one
    events = JobConsumer.connection_for_write(consumer)
    jobs = celery_app.connection_for_write()
    # then only the events' connection publishes without waiting for RabbitMQ's confirm
    assert events.transport_options["confirm_publish"] is False
    assert jobs.transport_options["confirm_publish"] is True
