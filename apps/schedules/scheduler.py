"""The scheduler: a thread of each relay process (`manage.py relay_outbox`) that fires due schedules.

Every relay runs one, and all of them work at once (nothing to fail over): each schedule's slot is fired under its
row lock and recorded with an idempotency key, so two or more schedulers make one job per slot
(apps/schedules/services.py). A pass is one indexed query when nothing is due, and at most
CONVEYOR_SCHEDULE_BATCH_SIZE schedules when some are; between passes the thread sleeps until the next slot, and at
most CONVEYOR_SCHEDULE_TICK_SECONDS, so a new or changed schedule counts within that time.
"""
import contextlib
import logging
import threading
import time

from django.conf import settings
from django.db import Error, connection
from django.db.models import Min
from django.utils import timezone

from apps.schedules.models import JobSchedule
from apps.schedules.services import schedules_fire

logger = logging.getLogger(__name__)


def scheduler_pause() -> float:
    """Seconds until the next slot of any enabled schedule, at most CONVEYOR_SCHEDULE_TICK_SECONDS."""
    tick = settings.CONVEYOR_SCHEDULE_TICK_SECONDS
    due = JobSchedule.objects.filter(enabled=True).aggregate(due=Min("next_run_at"))["due"]
    if due is None:
        return tick
    return min(tick, max(0.0, (due - timezone.now()).total_seconds()))


def scheduler_thread_start() -> threading.Thread:
    """Run the scheduler in a daemon thread (its own database connection)."""

    def run() -> None:
        tick = settings.CONVEYOR_SCHEDULE_TICK_SECONDS
        logger.info("scheduler started: due schedules fired at least every %g s", tick)
        while True:
            pause = tick
            try:
                fired = schedules_fire()
                if fired:
                    logger.info("Scheduler: submitted %d job(s)", fired)
                pause = scheduler_pause()
            except Error as exc:
                logger.warning("Scheduler: PostgreSQL failed (%s: %s); trying again in %g s", type(exc).__name__,
                               str(exc).strip(), tick)
                with contextlib.suppress(Error):
                    connection.close()
            except Exception:
                logger.exception("Scheduler pass failed; the next one is in %g s", tick)
            time.sleep(pause)

    thread = threading.Thread(target=run, name="scheduler", daemon=True)
    thread.start()
    return thread
