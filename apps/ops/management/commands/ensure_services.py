"""Make sure PostgreSQL and RabbitMQ answer (starting them when installed) and the database exists."""
from django.core.management.base import BaseCommand, CommandError

from apps.ops.bootstrap import ServiceUnavailable, database_ensure_exists, service_ensure_running, services_required


class Command(BaseCommand):
    help = "Use PostgreSQL and RabbitMQ when they run, start them when installed, create the database if missing."

    def handle(self, *args, **options) -> None:
        try:
            for service in services_required():
                how = service_ensure_running(service, log=self.stdout.write)
                self.stdout.write(f"{service.name}: {how} on {service.host}:{service.port}")
        except ServiceUnavailable as exc:
            raise CommandError(str(exc)) from None
        if database_ensure_exists():
            self.stdout.write("Created the database.")
