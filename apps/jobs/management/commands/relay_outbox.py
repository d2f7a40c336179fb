"""Run the outbox relay: it publishes every recorded job to RabbitMQ (apps/jobs/relay.py)."""
import importlib

from django.core.management.base import BaseCommand

from apps.jobs.publishing import JobPublisher
from apps.jobs.relay import outbox_relay, outbox_relay_run


class Command(BaseCommand):
    help = "Publish recorded jobs to RabbitMQ, woken by PostgreSQL whenever one is committed."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")
        parser.add_argument(
            "--include", action="append", default=[], metavar="MODULE",
            help="Import MODULE, which registers more job kinds (as `celery worker --include` does); "
            "the relay publishes only jobs of kinds it knows.",
        )

    def handle(self, *args, once: bool = False, include: list[str], **options) -> None:
        for module in include:
            importlib.import_module(module)
        if once:
            with JobPublisher() as publisher:
                done = outbox_relay(publisher=publisher)
            self.stdout.write(f"Published {done.published} of the {done.found} job(s) found in the outbox.")
            return
        outbox_relay_run()
