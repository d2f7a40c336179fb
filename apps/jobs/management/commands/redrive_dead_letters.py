"""Move messages out of the dead-letter queue: their failed jobs run again as new attempts."""
from django.core.management.base import BaseCommand

from apps.jobs.services import dead_letters_redrive


class Command(BaseCommand):
    help = "Re-drive up to --limit messages from the dead queue; each failed job runs again as a new attempt."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=1000, help="Most messages to move (default 1000).")

    def handle(self, *args, limit: int, **options) -> None:
        count = dead_letters_redrive(limit=limit)
        self.stdout.write(f"Re-drove {count} job(s) from the dead queue.")
