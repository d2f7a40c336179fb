"""Real processes for the tests, as `make run` starts them: outbox relays and Celery workers on the test
database and `test-` queues, PostgreSQL and RabbitMQ stopped and started for real; and the helpers that wait on
them. A pytest plugin (tests/conftest.py's pytest_plugins), so every test module can ask for its fixtures."""
import contextlib
import os
import random
import shutil
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
from django.db.models import QuerySet

from apps.jobs.models import Job, JobAttempt
from bench.processes import Process, free_port, wait_until
from config import broker
from config.celery import app as celery_app
from scripts.rabbitmq_cluster import Cluster, cluster_define, cluster_stop
from tests.integration import kinds_for_tests  # noqa: F401  (registers the test kinds in the test process too)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "logs"

__all__ = ["Process", "free_port", "wait_until"]  # shared with the benchmark (bench/processes.py)


def database_url() -> str:
    """The test database's URL, as DATABASE_URL gives it to a process."""
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a worker or relay started by a test: the test database and test queues."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(),
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


def worker_start(*, concurrency: int = 2, queue: str = "default", ready: bool = True, **env: str) -> Process:
    """A worker of one job queue, started as the Procfile starts it (run_worker: the pool the queue declares); `env`
    overrides settings, e.g. a shorter timeout or CONVEYOR_QUEUE_POOLS. Unless `ready` is False, returned once it
    consumes. The caller ends it; tests that take their relay from the `relay` fixture use `start_worker`."""
    name = f"worker-{uuid.uuid4().hex[:6]}"
    command = [
        sys.executable, "manage.py", "run_worker", queue, "--concurrency", str(concurrency), "--",
        "--hostname", f"{name}@%h", "--include", "tests.integration.kinds_for_tests",
        "--without-gossip", "--without-mingle",
    ]
    process = process_start(name, command, subprocess_env(**env))
    if ready:
        process_ready(process, marker=" ready.")
    return process


@pytest.fixture
def start_worker(transactional_db, relay) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(*, ready: bool = True, **options) -> Process:
        """worker_start's worker, ended after the test (kept from the moment it starts, should it fail to)."""
        process = worker_start(ready=False, **options)
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


class LoopbackLink:
    """A TCP path on loopback to RabbitMQ or PostgreSQL that a test cuts and restores. For a process connected
    through it (`url`), a cut link is that service gone: its connections drop and new ones are refused, while the
    service itself, which other test runs on the machine share, keeps running."""

    def __init__(self, url: str, *, default_port: int) -> None:
        target = urlsplit(url)
        self.target = (target.hostname or "127.0.0.1", target.port or default_port)
        self.port = free_port()
        userinfo, at, _ = target.netloc.rpartition("@")
        self.url = target._replace(netloc=f"{userinfo}{at}127.0.0.1:{self.port}").geturl()
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
        # One side closed: end the other too (shut down first, so the pump of the other direction stops waiting),
        # as the process's death would end its connection to the service.
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def broker_link() -> Iterator[LoopbackLink]:
    """A link to RabbitMQ: a process given CELERY_BROKER_URL=broker_link.url reaches it through the link."""
    link = LoopbackLink(settings.CELERY_BROKER_URL, default_port=5672)
    link.up()
    yield link
    link.down()


@pytest.fixture
def database_link(transactional_db) -> Iterator[LoopbackLink]:
    """A link to the test database: a process given DATABASE_URL=database_link.url reaches it through the link."""
    link = LoopbackLink(database_url(), default_port=5432)
    link.up()
    yield link
    link.down()


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _cluster_port_base() -> int:
    """A port p such that p..p+2 (AMQP), p+6000.. (management) and p+12000.. (distribution) are all free.

    Below 32768, where Linux picks the local ports of outgoing connections, so none takes one meanwhile.
    """
    for _ in range(50):
        base = random.randrange(11000, 13000, 10)
        if all(port_free(base + offset + number) for offset in (0, 6000, 12000) for number in range(3)):
            return base
    raise AssertionError("No free ports for a test cluster between 11000 and 25000.")


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A three-node RabbitMQ cluster of this test alone (`make cluster`'s or another run's may be running), defined
    but not started: the test starts it. Stopped and its files removed afterwards; the default node is never
    touched."""
    base = _cluster_port_base()
    # Under the checkout, not tmp_path: the nodes run as the rabbitmq user, who cannot enter /tmp/pytest-of-root.
    directory = ROOT / "var" / f"test-cluster-{uuid.uuid4().hex[:8]}"
    directory.mkdir(parents=True)
    defined = cluster_define(name=f"conveyor-test-{directory.name[-8:]}", directory=directory, amqp_port=base,
                             management_port=base + 6000, dist_port=base + 12000)
    yield defined
    cluster_stop(defined)
    shutil.rmtree(directory)


def job_finished(job: Job) -> Job | None:
    """The job as it is now if it has finished, else None (for wait_until)."""
    job.refresh_from_db()
    return job if job.is_finished else None


def jobs_run_twice_at_once(jobs: QuerySet[Job]) -> list[str]:
    """Ids of the jobs of `jobs` that had two attempts running at the same time: one started before an earlier one
    had finished (or an earlier one never finished). The fence (apps/jobs/lifecycle.py) allows none."""
    overlapping: set[str] = set()
    ended: dict = {}
    attempts = JobAttempt.objects.filter(job__in=jobs).order_by("job_id", "started_at", "number")
    for job_id, started, finished in attempts.values_list("job_id", "started_at", "finished_at"):
        end = ended.get(job_id, started)
        if end is None or started < end:
            overlapping.add(str(job_id))
        ended[job_id] = None if end is None or finished is None else max(end, finished)
    return sorted(overlapping)


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
