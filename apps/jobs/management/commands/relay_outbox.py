"""Run the outbox relay (apps/jobs/relay.py), the one publisher of job messages, with the lifeline
(apps/jobs/reconciler.py) and the scheduler of job schedules (apps/schedules/scheduler.py) in threads beside it."""
import importlib

from django.core.management.base import BaseCommand

from apps.jobs.publishing import JobPublisher
from apps.jobs.reconciler import lifeline_pass, lifeline_thread_start
from apps.jobs.relay import outbox_relay, outbox_relay_run, relay_leadership_take
from apps.schedules.scheduler import scheduler_thread_start
from apps.schedules.services import schedules_fire


class Command(BaseCommand):
    help = ("Publish jobs due in the outbox to RabbitMQ, woken by PostgreSQL whenever one is committed; "
            "and find jobs whose message is lost, and prune old ones, every CONVEYOR_RECONCILE_INTERVAL_SECONDS; "
            "and submit the jobs of due schedules.")

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true",
                            help="One scheduler pass, one relay pass and one lifeline pass, then exit (the last two "
                            "unless another relay publishes).")
        parser.add_argument(
            "--include", action="append", default=[], metavar="MODULE",
            help="Import MODULE, which registers more job kinds (as `celery worker --include` does); "
            "the relay publishes only jobs of kinds it knows.",
        )

    def handle(self, *args, once: bool = False, include: list[str], **options) -> None:
        for module in include:
            importlib.import_module(module)
        if once:
            scheduled = schedules_fire()
            self.stdout.write(f"Submitted {scheduled} job(s) of due schedules.")
            if not relay_leadership_take():
                self.stdout.write("Another relay is publishing the outbox; nothing done.")
                return
            with JobPublisher() as publisher:
                done = outbox_relay(publisher=publisher)
            lifeline = lifeline_pass()
            self.stdout.write(f"Published {done.published} of the {done.found} job(s) due in the outbox; "
                              f"dispatched {lifeline.redispatched} job(s) again and pruned {lifeline.pruned}.")
            return
        lifeline_thread_start()
        scheduler_thread_start()
        outbox_relay_run()
