"""Start the Celery worker of one job queue, run the way the queue declares (config/worker.py's queue_execution):
the Procfile's and compose's worker lines."""
import argparse
import os
import sys

from django.core.management.base import BaseCommand, CommandError

from config import broker
from config.worker import queue_execution


class Command(BaseCommand):
    help = ("Start a Celery worker for QUEUE with the pool, concurrency and prefetch the queue declares "
            "(CONVEYOR_QUEUE_POOLS, CONVEYOR_QUEUE_CONCURRENCY, CONVEYOR_QUEUE_PREFETCH_MULTIPLIERS). "
            "Options after -- go to `celery worker` as they are.")

    def add_arguments(self, parser):
        parser.add_argument("queue", help="the job queue, as kinds name it (default, reports)")
        parser.add_argument("--concurrency", type=int, help="jobs at once, instead of the queue's setting")
        parser.add_argument("celery_options", nargs=argparse.REMAINDER, help="-- then options for celery worker")

    def handle(self, *args, queue: str, concurrency: int | None, celery_options: list[str], **options) -> None:
        try:
            execution = queue_execution(queue)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        threads = execution.pool == "threads"
        command = [
            sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO",
            "--queues", broker.queue_name(queue), "--hostname", f"{queue}@%h",
            # Celery's custom pool slot names config.worker's JobThreadPool (CELERY_CUSTOM_WORKER_POOL below).
            "--pool", "custom" if threads else "prefork",
            "--concurrency", str(concurrency or execution.concurrency),
            "--prefetch-multiplier", str(execution.prefetch_multiplier),
            *[option for option in celery_options if option != "--"],
        ]
        environment = {**os.environ, "CELERY_CUSTOM_WORKER_POOL": "config.worker:JobThreadPool"} if threads else None
        self.stderr.write(f"Queue {queue}: {execution.pool}, {concurrency or execution.concurrency} at once, "
                          f"prefetch x{execution.prefetch_multiplier}: {' '.join(command[1:])}")
        sys.stderr.flush()
        os.execve(sys.executable, command, environment or dict(os.environ))
