"""docker-compose.yml's healthchecks, run against real processes started from the same commands: they pass
while the process serves and fail when it cannot (no Docker engine runs here, so the probe runs on the host)."""
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.ops.test_deployment import compose_command, compose_services
from tests.processes import Process, free_port, process_start, queues_reset, subprocess_env, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# A probe finds `celery` and `python` on PATH in the image; here they are the test's own.
PATH = f"{Path(sys.executable).parent}:{os.environ['PATH']}"


def _compose_environment(service: dict, **deployer: str) -> dict[str, str]:
    """The service's environment as compose sets it, `deployer` being what the .env file says."""
    def interpolate(match: re.Match) -> str:
        name, default = match.group(1), match.group(2) or ""
        return deployer.get(name, default)

    return {key: re.sub(r"\$\{(\w+)(?::[-?]([^}]*))?\}", interpolate, str(value))
            for key, value in service["environment"].items()}


def _probe(service: dict, *, replace: tuple[str, str] = ("", ""), **env: str) -> subprocess.CompletedProcess:
    """Run the service's healthcheck as Docker would: CMD as it is, CMD-SHELL through sh -c."""
    kind, *command = (part.replace("$$", "$").replace(*replace) for part in service["healthcheck"]["test"])
    argv = ["sh", "-c", command[0]] if kind == "CMD-SHELL" else command
    return subprocess.run(argv, cwd=ROOT, env={**subprocess_env(), "PATH": PATH, **env}, capture_output=True,
                          text=True, timeout=60)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def start() -> Iterator[Callable[[str, str, dict[str, str]], Process]]:
    """Start a service's command through sh -c, as compose does; each process ends with the test (woken first
    if the test froze it)."""
    started: list[Process] = []

    def start_command(name: str, command: str, env: dict[str, str]) -> Process:
        process = process_start(f"healthcheck-{name}", ["sh", "-c", command], {**env, "PATH": PATH})
        started.append(process)
        return process

    yield start_command
    for process in started:
        if process.popen.poll() is None:
            os.killpg(process.popen.pid, signal.SIGCONT)
        process.stop()


def test_web_healthcheck_passes_while_gunicorn_serves_with_any_allowed_hosts_and_fails_once_it_stops(start):
    web = compose_services()["web"]
    port = free_port()
    # Given the web service's command and environment, with a deployer's own host name allowed
    environment = {
        **subprocess_env(),
        **_compose_environment(web, DJANGO_SECRET_KEY="s" * 50, FLOWER_BASIC_AUTH="ops:x",
                               DJANGO_ALLOWED_HOSTS="conveyor.example.com"),
        "DATABASE_URL": subprocess_env()["DATABASE_URL"],
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "WEB_BIND": f"127.0.0.1:{port}",
    }
    server = start("web", compose_command(web), environment)
    wait_until(lambda: _listening(port) or server.popen.poll() is not None, timeout=60, what="gunicorn to listen")
    assert server.popen.poll() is None, server.output()

    # when the healthcheck runs, it passes
    healthy = _probe(web, replace=(":8000/", f":{port}/"))
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr + server.output()[-2000:]

    # and once gunicorn is gone, it fails
    server.stop()
    assert _probe(web, replace=(":8000/", f":{port}/")).returncode != 0


@pytest.mark.django_db(transaction=True)
def test_worker_healthcheck_passes_while_the_worker_consumes_and_fails_while_it_cannot(start):
    services = compose_services()
    host = f"hc{uuid.uuid4().hex[:8]}"
    queues_reset("default", "reports")
    for name, queue in (("worker", "default"), ("worker-reports", "reports")):
        service = services[name]
        # Given the service's own worker command (its queues are this test's), named as on a host of its own
        command = compose_command(service) + f" -- --hostname {queue}@{host} --without-gossip --without-mingle"
        worker = start(name, command, subprocess_env())
        wait_until(lambda: " ready." in worker.output() or worker.popen.poll() is not None,  # noqa: B023
                   timeout=60, what=f"{name} to start")
        assert worker.popen.poll() is None, worker.output()

        # then its healthcheck, on that host, passes
        healthy = _probe(service, HOSTNAME=host)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr

        # while the worker is frozen it can consume nothing, and the healthcheck fails
        os.killpg(worker.popen.pid, signal.SIGSTOP)
        frozen = _probe(service, HOSTNAME=host)
        assert frozen.returncode != 0 and "No nodes replied" in frozen.stderr, frozen.stderr

        # and it passes again once the worker runs on
        os.killpg(worker.popen.pid, signal.SIGCONT)
        wait_until(lambda: _probe(service, HOSTNAME=host).returncode == 0, timeout=60,  # noqa: B023
                   what=f"{name} to answer again")

        worker.stop()
