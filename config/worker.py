"""The worker's own parts, kept apart from config.celery, which web processes import: its consumer
(CELERY_WORKER_CONSUMER) and a bootstep that keeps its event loop's timers small."""
import heapq

from celery import bootsteps
from celery.worker.consumer import Consumer
from kombu import Connection
from kombu.asynchronous.timer import Timer

# Seconds between two sweeps of cancelled timers; one sweep over a few hundred thousand takes
# milliseconds.
TIMER_SWEEP_SECONDS = 30


class JobConsumer(Consumer):
    """Celery's consumer, except that it publishes monitoring events without waiting for confirms, and does not
    declare Celery's native delayed delivery queues: a job's retry waits as a row in the outbox
    (apps/jobs/lifecycle.py), and no job message is published with a countdown.

    The broker's transport options ask RabbitMQ to confirm every publish, which job messages
    need. An event lost on the way costs a line in Flower, never a job, and waiting for the
    confirms of the three events of every job took half of the worker's main process (`make bench
    --profile`). The consumer opens a connection for writing only for its event dispatcher.
    https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-consumer
    """

    class Blueprint(Consumer.Blueprint):
        default_steps = [step for step in Consumer.Blueprint.default_steps if not step.endswith(":DelayedDelivery")]

    def connection_for_write(self, url: str | None = None, heartbeat: float | None = None) -> Connection:
        return self.ensure_connected(self.app.connection_for_write(
            url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}
        ))


class CancelledTimersSweep(bootsteps.StartStopStep):
    """Drops cancelled timers from the worker's event loop every TIMER_SWEEP_SECONDS.

    The prefork pool sets a soft and a hard time-limit timer for every job and cancels both when
    the job ends, but kombu's timer keeps a cancelled timer until it would have fired. With the
    330 s hard limit the main process held the timers of the last 330 s of jobs: 64 MiB more at
    about 400 jobs a second through the benchmark's backlog. https://github.com/celery/celery/issues/5200
    """

    requires = ("celery.worker.components:Hub",)

    def start(self, worker) -> None:
        if worker.hub is not None:
            worker.hub.call_repeatedly(TIMER_SWEEP_SECONDS, timers_cancelled_drop, worker.hub.timer)


def timers_cancelled_drop(timer: Timer) -> None:
    """Remove the cancelled entries of `timer`'s queue (a heap), in place, as the loop holds it."""
    queue = timer._queue
    live = [scheduled for scheduled in queue if not scheduled.entry.canceled]
    if len(live) < len(queue):
        heapq.heapify(live)
        queue[:] = live
