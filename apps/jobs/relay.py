"""The outbox relay: the one publisher of job messages, woken by PostgreSQL the moment a job enters the outbox.

A request only writes the job's row, and a worker only writes what happened. Migration 0004's trigger sends
NOTIFY conveyor_outbox when a row enters the outbox (a job that waits for a message, unpublished);
PostgreSQL delivers it when the transaction commits, so a job is published after commit or, if its
transaction rolls back, never. The relay claims the due jobs in batches (each claim raises the job's
generation, lifecycle.dispatch_claim), publishes them with the batch's publisher confirms in flight
together, and marks the confirmed ones published. What RabbitMQ refused or could not take (down, queue
full) stays in the outbox and is tried again every CONVEYOR_RELAY_INTERVAL_SECONDS. A retry's backoff and
any other future due time wait as the row's due_at: the relay sleeps until the next one, so nothing waits in
a worker's memory or in RabbitMQ's delay queues.

Several relays may run (on several hosts): the one holding the relay's PostgreSQL advisory lock publishes,
the others stand by and try to take it every interval, so one takes over within an interval of the first
one's death (PostgreSQL releases the lock with its connection). Each relay process also runs the lifeline
(apps/jobs/reconciler.py) in a thread of its own.
https://www.postgresql.org/docs/15/sql-notify.html
"""
import logging
import select
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import Error, connection
from django.utils import timezone

from apps.jobs import lifecycle
from apps.jobs.publishing import JobPublisher
from apps.jobs.registry import kinds_all

logger = logging.getLogger(__name__)

OUTBOX_CHANNEL = "conveyor_outbox"
# Session advisory lock key held by the publishing relay; the others stand by.
RELAY_LOCK = 0x6F7574626F78  # "outbox"


@dataclass(frozen=True)
class RelayPass:
    found: int  # jobs the pass claimed from the outbox (at most the batch size)
    published: int  # of those, the jobs RabbitMQ confirmed


def outbox_relay(*, publisher: JobPublisher, batch_size: int | None = None) -> RelayPass:
    """One pass: claim up to `batch_size` due jobs of the outbox, oldest due first, publish them, and mark
    those RabbitMQ confirmed. Jobs of a kind this process does not know (its code is not deployed here yet)
    are left for a relay that knows it."""
    dispatches = lifecycle.dispatch_claim(kinds=_kind_names(), limit=batch_size or settings.CONVEYOR_RELAY_BATCH_SIZE)
    confirmed = publisher.publish(dispatches)
    lifecycle.dispatch_confirm(dispatches=confirmed)
    return RelayPass(found=len(dispatches), published=len(confirmed))


def relay_leadership_take() -> bool:
    """Hold the relay's lock on this process's connection if no other relay holds it; True when held."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RELAY_LOCK])
        return cursor.fetchone()[0]


def outbox_relay_run() -> None:
    """Relay for ever: publish whenever a job enters the outbox or falls due, and at least every interval;
    or stand by while another relay publishes."""
    interval, batch_size = settings.CONVEYOR_RELAY_INTERVAL_SECONDS, settings.CONVEYOR_RELAY_BATCH_SIZE
    logger.info("outbox relay started: woken by NOTIFY %s, a pass at least every %.1f s", OUTBOX_CHANNEL, interval)
    listening_on, leading, standing_by = None, False, False
    with JobPublisher() as publisher:
        while True:
            try:
                if connection.connection is None or connection.connection is not listening_on:
                    # A new connection (the first, or PostgreSQL came back): LISTEN first, then a pass, so a
                    # job committed in between is in the pass. The lock, if held, went with the old one.
                    with connection.cursor() as cursor:
                        cursor.execute(f"LISTEN {OUTBOX_CHANNEL}")
                    listening_on, leading = connection.connection, False
                if not leading:
                    leading = relay_leadership_take()
                    if not leading:
                        if not standing_by:
                            logger.info("another relay is publishing; this one stands by")
                        standing_by = True
                        _outbox_wait(listening_on, timeout=interval)
                        continue
                    logger.info("this relay publishes the outbox")
                    standing_by = False
                done = outbox_relay(publisher=publisher, batch_size=batch_size)
                if done.published < done.found:
                    # Refused (a full queue) or not taken (RabbitMQ down): new jobs will not change that, so
                    # the next try waits the interval rather than the next notification.
                    time.sleep(interval)
                elif done.found < batch_size:
                    _outbox_wait(listening_on, timeout=_seconds_to_next_due(interval))
            except Error as exc:
                logger.warning("outbox relay: PostgreSQL failed (%s: %s); trying again in %.1f s",
                               type(exc).__name__, str(exc).strip(), interval)
                try:
                    connection.close()
                except Error:
                    pass
                time.sleep(interval)


def _kind_names() -> list[str]:
    return [kind.name for kind in kinds_all()]


def _seconds_to_next_due(interval: float) -> float:
    """Until the next job of the outbox falls due, at most `interval`."""
    due = lifecycle.dispatch_next_due(kinds=_kind_names())
    if due is None:
        return interval
    return min(interval, max(0.0, (due - timezone.now()).total_seconds()))


def _outbox_wait(pg_connection, *, timeout: float) -> None:
    """Until a notification arrives on the LISTEN connection, or `timeout` seconds."""
    with connection.wrap_database_errors:
        if not pg_connection.notifies and select.select([pg_connection], [], [], timeout)[0]:
            pg_connection.poll()
        pg_connection.notifies.clear()
