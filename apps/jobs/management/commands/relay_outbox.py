"""Run the outbox relay: publish jobs that are recorded but not confirmed by RabbitMQ."""
import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.jobs.services import outbox_relay

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Publish recorded jobs that RabbitMQ has not confirmed yet (broker was down or queue full)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")

    def handle(self, *args, once: bool = False, **options) -> None:
        interval = settings.CONVEYOR_RELAY_INTERVAL_SECONDS
        logger.info("outbox relay started, a pass every %.1f s", interval)
        while True:
            try:
                published = outbox_relay()
            except Exception:  # the database blinked; the next pass tries again
                logger.exception("outbox relay pass failed")
                published = 0
            if published:
                logger.info("outbox relay published %d job(s)", published)
            if once:
                return
            time.sleep(interval)
