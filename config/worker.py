"""The worker's consumer (CELERY_WORKER_CONSUMER): kept apart from config.celery, which web processes import."""
from celery.worker.consumer import Consumer
from kombu import Connection


class JobConsumer(Consumer):
    """Celery's consumer, except that it publishes monitoring events without waiting for confirms.

    The broker's transport options ask RabbitMQ to confirm every publish, which job messages
    need. An event lost on the way costs a line in Flower, never a job, and waiting for the
    confirms of the three events of every job took half of the worker's main process (`make bench
    --profile`). The consumer opens a connection for writing only for its event dispatcher.
    https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-consumer
    """

    def connection_for_write(self, url: str | None = None, heartbeat: float | None = None) -> Connection:
        return self.ensure_connected(self.app.connection_for_write(
            url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}
        ))
