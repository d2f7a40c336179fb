"""Reads about the health of the services Conveyor depends on."""
from django.db import connection

from config.celery import app as celery_app

# A probe must answer quickly even when a dependency hangs.
PROBE_TIMEOUT_SECONDS = 2


def database_status() -> str:
    """'ok', or why PostgreSQL did not answer."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure is the answer, not an error of the probe
        return f"unavailable: {exc.__class__.__name__}: {exc}".strip()
    return "ok"


def broker_status() -> str:
    """'ok', or why RabbitMQ did not answer."""
    try:
        with celery_app.connection_for_read(connect_timeout=PROBE_TIMEOUT_SECONDS) as conn:
            conn.connect()
    except Exception as exc:
        return f"unavailable: {exc.__class__.__name__}: {exc}".strip()
    return "ok"
