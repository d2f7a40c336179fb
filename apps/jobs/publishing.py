"""Job messages to RabbitMQ: the one place a job's message is built, and publishing with many confirms in
flight, so a batch waits once, not once per job. Only the outbox relay publishes jobs."""
import logging
import time
from types import TracebackType

from django.conf import settings
from kombu import Connection, Producer, Queue

from apps.jobs.lifecycle import Dispatch
from apps.jobs.registry import kind_get
from config import broker
from config.celery import app as celery_app

logger = logging.getLogger(__name__)


class JobPublisher:
    """One connection whose channel is in confirm mode, kept open between batches.

    `publish` sends every message of a batch, then waits for RabbitMQ's confirms of all of them.
    The connection's own `confirm_publish` (which waits after each message) is off; the channel's
    confirms are counted here instead: RabbitMQ numbers the messages of a confirm-mode channel 1,
    2, 3... and acknowledges (or, for a full queue, refuses) each, one by one or many at once.
    https://www.rabbitmq.com/docs/confirms#publisher-confirms
    """

    def __init__(self) -> None:
        self._connection: Connection | None = None
        self._producer: Producer | None = None
        # Job queues bound to the channel, declared on first use (kombu remembers which it declared).
        self._queues: dict[str, Queue] = {}
        self._next_tag = 1
        self._unsettled: dict[int, Dispatch] = {}
        self._confirmed: list[Dispatch] = []

    def __enter__(self) -> "JobPublisher":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def publish(self, messages: list[Dispatch]) -> list[Dispatch]:
        """Publish `messages`; those RabbitMQ confirmed.

        A job missing from the answer was refused (its queue is full), or RabbitMQ could not be
        reached or gave no confirm within CONVEYOR_PUBLISH_CONFIRM_TIMEOUT_SECONDS; it stays in the
        outbox. Nothing is raised: the reason is logged, and after an error the next batch opens a
        new connection.
        """
        confirmed: list[Dispatch] = []
        self._confirmed = confirmed
        if not messages:
            return confirmed
        try:
            producer = self._producer_get()
            for message in messages:
                self._unsettled[self._next_tag] = message
                self._next_tag += 1
                self._send(producer, message)
            deadline = time.monotonic() + settings.CONVEYOR_PUBLISH_CONFIRM_TIMEOUT_SECONDS
            while self._unsettled:
                self._connection.drain_events(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # broker down, connection lost, or no confirm in time
            logger.warning("RabbitMQ confirmed %d of %d job messages (%s: %s); the rest stay in the outbox",
                           len(confirmed), len(messages), type(exc).__name__, exc or "no answer")
            self.close()
            return confirmed
        if len(confirmed) < len(messages):
            logger.warning("RabbitMQ refused %d of %d job messages (a full queue); they stay in the outbox",
                           len(messages) - len(confirmed), len(messages))
        return confirmed

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # it is being dropped because it broke; closing may fail too
                pass
        self._connection = self._producer = None
        self._unsettled, self._queues = {}, {}

    def _producer_get(self) -> Producer:
        if self._producer is None:
            # No heartbeats: nothing reads this connection between batches, and a dead one shows
            # as an error (or a confirm timeout) at the next batch, which then reconnects.
            connection = celery_app.connection_for_write(transport_options={"confirm_publish": False}, heartbeat=0)
            channel = connection.channel()
            channel.confirm_select()
            channel.events["basic_ack"].add(lambda tag, multiple: self._settle(tag, multiple, confirmed=True))
            channel.events["basic_nack"].add(lambda tag, multiple: self._settle(tag, multiple, confirmed=False))
            self._connection, self._producer, self._next_tag = connection, Producer(channel), 1
        return self._producer

    def _send(self, producer: Producer, message: Dispatch) -> None:
        """Celery's own message for the kind's task (protocol 2), without waiting for anything. It carries the
        job's id and the dispatch's generation; the worker reads everything else from the job's row."""
        kind = kind_get(message.kind)
        job_id = str(message.job_id)
        queue = self._queues.get(message.queue)
        if queue is None:
            queue = self._queues[message.queue] = broker.job_queue(message.queue)(producer.channel)
        task_message = celery_app.amqp.create_task_message(
            job_id, kind.task.name, (), {"job_id": job_id, "generation": message.generation},
            time_limit=kind.time_limit, soft_time_limit=kind.soft_time_limit, ignore_result=True,
        )
        celery_app.amqp.send_task_message(
            producer, kind.task.name, task_message, queue=queue, headers={"trace_id": message.trace_id}, retry=False,
        )

    def _settle(self, tag: int, multiple: bool, *, confirmed: bool) -> None:
        tags = [settled for settled in self._unsettled if settled <= tag] if multiple else [tag]
        for settled in tags:
            message = self._unsettled.pop(settled, None)
            if confirmed and message is not None:
                self._confirmed.append(message)
