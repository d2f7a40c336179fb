"""Bootstrap for `make run` and `make test`: find or start PostgreSQL and RabbitMQ, create the database."""
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
from django.conf import settings
from psycopg2 import sql

from config.broker import broker_urls


class ServiceUnavailable(Exception):
    """A service does not answer and could not be started; the message says what to install or run."""


@dataclass(frozen=True)
class Service:
    name: str
    host: str
    port: int
    # Commands that start a locally installed copy, tried in order when the binary exists.
    start_commands: tuple[tuple[str, ...], ...]
    compose_service: str
    install_hint: str


def _pg_start_commands() -> tuple[tuple[str, ...], ...]:
    clusters = sorted(Path("/etc/postgresql").glob("*/main")) if Path("/etc/postgresql").exists() else []
    commands = [("pg_ctlcluster", "--skip-systemctl-redirect", c.parent.name, "main", "start") for c in clusters]
    return (*commands, ("systemctl", "start", "postgresql"), ("brew", "services", "start", "postgresql"))


def broker_nodes() -> list[tuple[str, int]]:
    """Host and port of each RabbitMQ node of CELERY_BROKER_URL: one URL, or several separated by `;`
    (kombu's failover list, as `make cluster` prints it)."""
    urls = [urlsplit(url) for url in broker_urls(settings.CELERY_BROKER_URL)]
    return [(url.hostname or "127.0.0.1", url.port or 5672) for url in urls]


def services_required() -> list[Service]:
    database = settings.DATABASES["default"]
    nodes = broker_nodes()
    # A cluster is up while any node answers (kombu moves to the next one), so check the first that does.
    broker_host, broker_port = next((node for node in nodes if _port_answers(*node)), nodes[0])
    single_node = len(nodes) == 1
    return [
        Service(
            name="PostgreSQL",
            host=database.get("HOST") or "127.0.0.1",
            port=int(database.get("PORT") or 5432),
            start_commands=_pg_start_commands(),
            compose_service="postgres",
            install_hint="Install PostgreSQL 15 or newer (Debian/Ubuntu: `apt-get install postgresql`; "
            "macOS: `brew install postgresql@16`) or Docker, then run this again.",
        ),
        Service(
            name="RabbitMQ",
            host=broker_host,
            port=broker_port,
            # start_app first: the node may be up with its application stopped (rabbitmqctl stop_app). A
            # cluster's nodes are not the machine's default node: `make cluster` starts them, not this.
            start_commands=(("rabbitmqctl", "start_app"), ("rabbitmq-server", "-detached"),
                            ("systemctl", "start", "rabbitmq-server"),
                            ("brew", "services", "start", "rabbitmq")) if single_node else (),
            compose_service="rabbitmq" if single_node else "",
            install_hint="Install RabbitMQ 3.10 or newer (Debian/Ubuntu: `apt-get install rabbitmq-server`; "
            "macOS: `brew install rabbitmq`) or Docker, then run this again." if single_node else
            "No node of CELERY_BROKER_URL answers: start the cluster (`make cluster` for the one on this "
            "machine), then run this again.",
        ),
    ]


def service_answers(service: Service, timeout: float = 1.0) -> bool:
    return _port_answers(service.host, service.port, timeout)


def _port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _wait_for(service: Service, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if service_answers(service):
            return True
        time.sleep(0.5)
    return False


def _docker_engine_runs() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


def service_ensure_running(service: Service, *, log=print, wait_seconds: float = 60) -> str:
    """Use the service if it answers, else start it (installed copy, then Docker); how it was found."""
    if service_answers(service):
        return "running"
    is_local = service.host in ("127.0.0.1", "localhost", "::1")
    if is_local:
        for command in service.start_commands:
            if shutil.which(command[0]) is None:
                continue
            log(f"{service.name} is not answering on {service.host}:{service.port}; starting it: {' '.join(command)}")
            subprocess.run(command, capture_output=True, timeout=120)
            if _wait_for(service, wait_seconds):
                return "started"
        if service.compose_service and _docker_engine_runs():
            log(f"Starting {service.name} with docker compose ({service.compose_service})")
            subprocess.run(["docker", "compose", "up", "-d", service.compose_service], check=True, timeout=600)
            if _wait_for(service, wait_seconds * 2):
                return "started with docker compose"
    raise ServiceUnavailable(
        f"{service.name} does not answer on {service.host}:{service.port}"
        + (" and could not be started here. " if is_local else ". ")
        + service.install_hint
    )


def database_ensure_exists() -> bool:
    """Create the configured database when it is missing; True when it was created."""
    database = settings.DATABASES["default"]
    params = {
        "dbname": "postgres",
        "user": database.get("USER") or None,
        "password": database.get("PASSWORD") or None,
        "host": database.get("HOST") or None,
        "port": database.get("PORT") or None,
        "connect_timeout": 5,
    }
    connection = psycopg2.connect(**{key: value for key, value in params.items() if value is not None})
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database["NAME"]])
            if cursor.fetchone():
                return False
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database["NAME"])))
            return True
    finally:
        connection.close()
