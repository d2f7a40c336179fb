"""Create the local admin user on a developer's machine and print how to sign in."""
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

USERNAME = "admin"
PASSWORD = "admin"


class Command(BaseCommand):
    help = "Create a local superuser admin/admin when it does not exist (local settings only)."

    def handle(self, *args, **options) -> None:
        if settings.SETTINGS_MODULE != "config.settings.local":
            raise CommandError("The local admin user is only for config.settings.local.")
        user_model = get_user_model()
        if not user_model.objects.filter(username=USERNAME).exists():
            user_model.objects.create_superuser(USERNAME, email="admin@localhost", password=PASSWORD)
            self.stdout.write(f"Created the local admin user: {USERNAME} / {PASSWORD}")
        else:
            self.stdout.write(f"Local admin user: {USERNAME} (password {PASSWORD!r} unless you changed it)")
