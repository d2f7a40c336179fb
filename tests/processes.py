"""Real processes for the tests, as `make run` starts them: outbox relays and Celery workers on the test
database and `test-` queues, PostgreSQL and RabbitMQ stopped and started for real; and the helpers that wait on
them. A pytest plugin (tests/conftest.py's pytest_plugins), so every test module can ask for its fixtures."""
import contextlib
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from amqp.exceptions import PreconditionFailed
from django.conf import settings
from django.db import connection

from apps.jobs.models import Job
from bench.processes import Process, free_port, wait_until
from config import broker
from config.celery import app as celery_app
from tests.integration import kinds_for_tests  # noqa: F401  (registers the test kinds in the test process too)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "logs"

__all__ = ["Process", "free_port", "wait_until"]  # shared with the benchmark (bench/processes.py)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a worker or relay started by a test: the test database and test queues."""
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": url,
        "CONVEYOR_QUEUE_PREFIX": settings.CONVEYOR_QUEUE_PREFIX,
        "CONVEYOR_DELIVERY_LIMIT": str(settings.CONVEYOR_DELIVERY_LIMIT),
        **extra,
    }


def process_start(name: str, command: list[str], env: dict[str, str]) -> Process:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / f"{name}-{uuid.uuid4().hex[:6]}.log"
    handle = log.open("w")
    popen = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    return Process(name=name, popen=popen, log=log)


def queues_reset(*names: str) -> None:
    """Empty the test queues so no message of an earlier run reaches this one. A queue whose arguments
    changed since (a limit) is deleted and declared anew, as it must be."""
    with celery_app.connection_for_write() as conn:
        for name in names:
            queue = broker.dead_queue() if name == "dead" else broker.job_queue(name)
            try:
                queue(conn.channel()).declare()
            except PreconditionFailed:
                queue(conn.channel()).delete()
                queue(conn.channel()).declare()
            queue(conn.channel()).purge()


def dead_letter_ids() -> list[str]:
    """Task ids of the messages in the dead-letter queue (read without removing them)."""
    ids, messages = [], []
    with celery_app.connection_for_write() as conn:
        queue = broker.dead_queue()(conn.default_channel)
        while (message := queue.get(no_ack=False)) is not None:
            ids.append(message.headers["id"])
            messages.append(message)
        for message in messages:
            message.requeue()
    return ids


def relay_start(*, ready: bool = True, **env: str) -> Process:
    """An outbox relay process, as `make run` runs it: it publishes the jobs a test submits (and runs the lifeline
    and the scheduler). Unless `ready` is False, returned once it is under way."""
    command = [sys.executable, "manage.py", "relay_outbox", "--include", "tests.integration.kinds_for_tests"]
    process = process_start("relay", command, subprocess_env(**{"CONVEYOR_RELAY_INTERVAL_SECONDS": "0.5", **env}))
    if ready:
        process_ready(process, marker="outbox relay started")
    return process


def process_ready(process: Process, *, marker: str) -> None:
    """Wait until `process` has written `marker` to its log; fail if it exits first."""
    wait_until(lambda: marker in process.output() or process.popen.poll() is not None, timeout=60,
               what=f"{process.name} to start")
    assert process.popen.poll() is None, f"{process.name} exited at start:\n{process.output()[-3000:]}"


@pytest.fixture
def relay(transactional_db) -> Iterator[Process]:
    process = relay_start()
    yield process
    process.kill()  # a graceful shutdown costs seconds; the next test empties the queues anyway


@pytest.fixture
def start_worker(transactional_db, relay) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(*, concurrency: int = 2, queue: str = "default", ready: bool = True, **env: str) -> Process:
        """A worker of one job queue, started as the Procfile starts it (run_worker: the pool the queue
        declares); `env` overrides settings, e.g. a shorter timeout or CONVEYOR_QUEUE_POOLS. Unless `ready` is
        False, returned once it consumes."""
        name = f"worker-{uuid.uuid4().hex[:6]}"
        command = [
            sys.executable, "manage.py", "run_worker", queue, "--concurrency", str(concurrency), "--",
            "--hostname", f"{name}@%h", "--include", "tests.integration.kinds_for_tests",
            "--without-gossip", "--without-mingle",
        ]
        process = process_start(name, command, subprocess_env(**env))
        started.append(process)
        if ready:
            process_ready(process, marker=" ready.")
        return process

    queues_reset("default", "reports", "dead", "held")
    yield start
    for process in started:
        process.kill()  # a graceful Celery shutdown costs two seconds a worker; the next test empties the queues


@pytest.fixture
def worker(start_worker) -> Process:
    return start_worker()


class BrokerLink:
    """A TCP path to RabbitMQ on loopback that a test cuts and restores. For a process connected through it, a cut
    link is RabbitMQ gone: its connections drop and new ones are refused, while RabbitMQ itself, which other test
    runs on the machine share, keeps running."""

    def __init__(self) -> None:
        target = urlsplit(settings.CELERY_BROKER_URL)
        self.target = (target.hostname or "127.0.0.1", target.port or 5672)
        self.port = free_port()
        self.url = target._replace(netloc=f"{target.netloc.rpartition('@')[0]}@127.0.0.1:{self.port}").geturl()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones (shut down first: a socket closed while another thread
        waits on it would stay open until that wait ends)."""
        with self._lock:
            sockets = [self._listener, *self._open] if self._listener is not None else [*self._open]
            self._listener = None
            self._open.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                return  # the link was cut
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            sock.close()


@pytest.fixture
def broker_link() -> Iterator[BrokerLink]:
    link = BrokerLink()
    link.up()
    yield link
    link.down()


def job_finished(job: Job) -> Job | None:
    """The job as it is now if it has finished, else None (for wait_until)."""
    job.refresh_from_db()
    return job if job.is_finished else None


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def _postgresql_cluster() -> tuple[str, str]:
    # Debian's cluster layout, /etc/postgresql/<version>/<name>, as `make test` starts it.
    [cluster] = sorted(Path("/etc/postgresql").glob("*/main"))
    return cluster.parent.name, cluster.name


def postgresql_stop() -> None:
    """Stop the PostgreSQL server for real (a fast shutdown: sessions are cut, as in a restart or failover)."""
    version, name = _postgresql_cluster()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "stop", "-m", "fast"], check=True,
                   capture_output=True, timeout=60)


def postgresql_start() -> None:
    """Start it again and wait until it takes connections; this process's own connection is opened anew."""
    version, name = _postgresql_cluster()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"], check=True,
                   capture_output=True, timeout=60)
    connection.close()

    def answers() -> bool:
        try:
            connection.ensure_connection()
        except Exception:
            connection.close()
            return False
        return True

    wait_until(answers, timeout=60, what="PostgreSQL to take connections")


@contextmanager
def postgresql_stopped() -> Iterator[None]:
    postgresql_stop()
    try:
        yield
    finally:
        postgresql_start()
