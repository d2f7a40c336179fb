"""Create an API token for a user (creating the user when missing) and print it once."""
from django.core.management.base import BaseCommand

from apps.jobs.services import api_token_create


class Command(BaseCommand):
    help = "Create a bearer token for the JSON API. The token is printed once; only its hash is stored."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username: str, **options) -> None:
        token, user_created = api_token_create(username=username)
        if user_created:
            self.stderr.write(f"Created user {username!r} (no password; set one with changepassword).")
        self.stdout.write(token)
