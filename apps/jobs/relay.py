"""The outbox relay: the one publisher of recorded jobs, woken by PostgreSQL the moment one is committed.

A request only writes the job's row. Migration 0003's trigger sends NOTIFY conveyor_outbox when a
row enters the outbox (queued and never published); PostgreSQL delivers it when the transaction
commits, so a job is published after commit or, if its transaction rolls back, never. The relay
publishes every job in the outbox in batches, with the batch's publisher confirms in flight
together, and marks the confirmed jobs published. What RabbitMQ refused or could not take (down,
queue full) stays in the outbox and is tried again every CONVEYOR_RELAY_INTERVAL_SECONDS.
https://www.postgresql.org/docs/15/sql-notify.html
"""
import logging
import select
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.jobs.models import Job
from apps.jobs.publishing import JobMessage, JobPublisher
from apps.jobs.registry import kinds_all

logger = logging.getLogger(__name__)

OUTBOX_CHANNEL = "conveyor_outbox"
# pg_try_advisory_xact_lock key: one relay pass at a time over a database, however many relays run.
OUTBOX_LOCK = 0x6F7574626F78  # "outbox"


@dataclass(frozen=True)
class RelayPass:
    found: int  # jobs the pass took from the outbox (at most the batch size)
    published: int  # of those, the jobs RabbitMQ confirmed


def outbox_relay(*, publisher: JobPublisher, batch_size: int | None = None) -> RelayPass:
    """One pass: publish up to `batch_size` jobs of the outbox, oldest first, and mark those confirmed.

    Passes never overlap: a second relay (or a pass started by hand) finds the lock taken and
    publishes nothing, so two relays never publish one job twice. Jobs of a kind this process
    does not know (its code is not deployed here yet) are left for a relay that knows it.
    """
    batch_size = batch_size or settings.CONVEYOR_RELAY_BATCH_SIZE
    # Plain SQL: a pass runs for every few jobs, and the ORM's queries cost more than the publish.
    job_table = Job._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [OUTBOX_LOCK])
        if not cursor.fetchone()[0]:
            return RelayPass(found=0, published=0)
        # The outbox's partial index (job_outbox) serves this, oldest first.
        cursor.execute(
            f"SELECT id, kind, queue, trace_id FROM {job_table} WHERE status = %s AND published_at IS NULL"
            " AND kind = ANY(%s) ORDER BY created_at LIMIT %s",
            [Job.Status.QUEUED, [kind.name for kind in kinds_all()], batch_size],
        )
        messages = [JobMessage(*row) for row in cursor.fetchall()]
        confirmed = publisher.publish(messages)
        if confirmed:
            cursor.execute(
                f"UPDATE {job_table} SET published_at = %s WHERE id = ANY(%s) AND published_at IS NULL",
                [timezone.now(), confirmed],
            )
    return RelayPass(found=len(messages), published=len(confirmed))


def outbox_relay_run() -> None:
    """Relay for ever: a pass whenever a job enters the outbox, and at least every interval."""
    interval, batch_size = settings.CONVEYOR_RELAY_INTERVAL_SECONDS, settings.CONVEYOR_RELAY_BATCH_SIZE
    logger.info("outbox relay started: woken by NOTIFY %s, a pass at least every %.1f s", OUTBOX_CHANNEL, interval)
    listening_on = None
    with JobPublisher() as publisher:
        while True:
            try:
                if connection.connection is None or connection.connection is not listening_on:
                    # LISTEN first, then a pass: a job committed in between is in the pass.
                    with connection.cursor() as cursor:
                        cursor.execute(f"LISTEN {OUTBOX_CHANNEL}")
                    listening_on = connection.connection
                done = outbox_relay(publisher=publisher, batch_size=batch_size)
                if done.published < done.found:
                    # Refused (a full queue) or not taken (RabbitMQ down): new jobs will not change
                    # that, so the next try waits the interval rather than the next notification.
                    time.sleep(interval)
                elif done.found < batch_size:
                    _outbox_wait(listening_on, timeout=interval)
            except DatabaseError:
                logger.exception("outbox relay: PostgreSQL failed; trying again in %.1f s", interval)
                connection.close()
                time.sleep(interval)


def _outbox_wait(pg_connection, *, timeout: float) -> None:
    """Until a notification arrives on the LISTEN connection, or `timeout` seconds."""
    with connection.wrap_database_errors:
        if not pg_connection.notifies and select.select([pg_connection], [], [], timeout)[0]:
            pg_connection.poll()
        pg_connection.notifies.clear()
