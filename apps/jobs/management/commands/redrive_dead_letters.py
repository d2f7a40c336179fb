"""Move messages out of the dead-letter queue: their failed jobs run again as new attempts."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.jobs.services import dead_letters_redrive


class Command(BaseCommand):
    help = "Re-drive up to --limit messages from the dead queue; each failed job runs again as a new attempt."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=1000, help="Most messages to move (default 1000).")
        parser.add_argument("--user", help="Record each job re-driven in the admin log as done by this user.")

    def handle(self, *args, limit: int, user: str | None, **options) -> None:
        by = None
        if user is not None:
            by = get_user_model().objects.filter(username=user).first()
            if by is None:
                raise CommandError(f"No user {user!r}; give the username of the operator who re-drives.")
        count = dead_letters_redrive(limit=limit, by=by)
        self.stdout.write(f"Re-drove {count} job(s) from the dead queue.")
