"""The measurements: submit throughput, end-to-end and real-work drains with their CPU, 202-to-start latency
idle and under load, memory and the backlog.

Runs inside the harness after django.setup(), on the benchmark's own database and queues. Besides the
backlog's retrying kind (bench/kinds.py), this module is the one place the benchmark uses Conveyor's
internals (apps.jobs); everything else drives Conveyor through its Procfile lines and its HTTP API.
"""
import collections
import json
import signal
import socket
import statistics
import threading
import time
import uuid
from argparse import Namespace
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from amqp.exceptions import PreconditionFailed
from celery import Celery
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_celery_results.models import TaskResult
from kombu import Connection

import bench.kinds  # noqa: F401  (registers bench.retry_once, the backlog's retrying kind)
from apps.jobs.models import Job, JobAttempt
from apps.jobs.publishing import JobPublisher
from apps.jobs.relay import outbox_relay
from apps.jobs.services import api_token_create, job_submit
from apps.ops.bootstrap import database_ensure_exists
from apps.webhooks.models import WebhookEndpoint
from bench import load, processes, receiver, report
from bench.baseline import celery as baseline
from bench.baseline import stock, stock_settings
from bench.processes import Process, RssSampler, wait_until
from bench.profile import profiled
from config import broker
from config.celery import app as conveyor_app
from config.worker import queue_execution

MIB = 1024 * 1024
NOOP_BODY = json.dumps({"kind": "diagnostics.noop", "params": {}}).encode()
# Rows per INSERT when the backlog is recorded: big enough to go fast, small enough to bound memory.
BACKLOG_BATCH = 10_000
# Seconds between checks while waiting on a queue or the database. Each check is a query the servers
# answer inside the measured CPU, so not much more often than the clock needs.
POLL = 0.01
# Seconds between samples of the job list page, idle and while the backlog drains.
PAGE_INTERVAL = 0.25
# Jobs of each kind of work each worker runs before anything is measured.
WARM_JOBS = 20
# The receiver's answer delays of the real work, in milliseconds: slow endpoints, then fast ones.
WEBHOOK_DELAYS_MS = (100, 10)
WEBHOOK_EVENT = "bench.delivery"
# The stock threads worker a user would start for I/O-bound tasks (issue 13), and the prefork one.
STOCK_THREADS = 32
STOCK_PROCESSES = 2


def _relay_command() -> str:
    """The Procfile's relay, also knowing the backlog's retrying kind, whose retries it publishes when due."""
    return f"{processes.procfile_command('relay')} --include bench.kinds"

# Issue 13's targets: the least ratio of Conveyor's figure to each baseline's (a baseline not named is
# reported without a target), and the latency bounds in milliseconds.
SUBMIT_TARGETS = {"confirmed": 1.0, "baseline": 0.8}
END_TO_END_TARGETS = {"stock": 3.0, "baseline": 0.8}
REAL_WORK_TARGETS = {100: {"threads": 1.0}}
IDLE_LATENCY_TARGETS_MS = {"p50": 3, "p99": 10}
LOADED_LATENCY_TARGETS_MS = {"p99": 50}


@dataclass
class Web:
    """A view that takes submissions: Conveyor's API, or one of the baseline's `delay()` views."""

    name: str
    label: str
    process: Process
    submit_url: str
    headers: dict[str, str]
    rss: dict[str, int] = field(default_factory=dict)


@dataclass
class Worker:
    """A worker draining its own queue: Conveyor's, or a baseline's; `web` and `relay` count with its CPU."""

    name: str
    label: str
    app: Celery
    queue: str
    command: str
    env: dict[str, str]
    web: Process
    relay: Process | None = None
    nodename: str = ""
    process: Process | None = None
    rss: dict[str, int] = field(default_factory=dict)

    def cpu_roots(self) -> dict[str, list[int]]:
        """The roots of the process trees whose CPU counts as this side's, besides the servers'."""
        own = {"web": self.web, "worker": self.process, **({"relay": self.relay} if self.relay else {})}
        return {role: [process.popen.pid] for role, process in own.items()}


@dataclass(frozen=True)
class Webhook:
    """Real work: deliveries to the receiver's path that answers after `delay_ms`, and Conveyor's endpoint for it."""

    delay_ms: int
    receiver_url: str
    endpoint_id: int
    owner: AbstractBaseUser

    @property
    def url(self) -> str:
        return f"{self.receiver_url}/hook/{self.delay_ms}"


def benchmark_run(args: Namespace, *, env: dict[str, str]) -> dict[str, Any]:
    generator = load.generator_name(args.load_generator)
    # Process logs and profiles stay out of git, apart for each queue prefix (a smoke run beside a full one).
    artifacts = processes.ROOT / "artifacts" / "bench" / args.queue_prefix.rstrip("-")
    log_dir = artifacts / "logs"
    profiles = artifacts / "profiles" if args.profile else None
    started_at = datetime.now(UTC)
    print(f"Benchmark: setting up database {connection.settings_dict['NAME']} and queues {args.queue_prefix}*")
    _setup()
    machine = report.machine_describe(postgres=_postgres_version(), rabbitmq=_rabbitmq_version(),
                                      load_generator=load.generator_version(generator))
    servers = _servers()
    token, _ = api_token_create(username="bench")
    submitter = get_user_model().objects.get(username="bench")
    staff_cookie = _staff_session_cookie()
    started: list[Process] = []
    try:
        webs, relay = _webs_start(args, env=env, log_dir=log_dir, token=token, started=started)
        receiver_url = _receiver_start(env=env, log_dir=log_dir, started=started)
        webhooks = _webhooks_create(receiver_url, owner=submitter)
        print(f"Submit throughput: {args.rounds} rounds of {args.submit_seconds:g} s per side ({generator})")
        submit = _submit_measure(args, webs=[webs[name] for name in ("confirmed", "baseline", "conveyor")],
                                 generator=generator, profiles=profiles)
        workers = _workers_start(args, env=env, log_dir=log_dir, webs=webs, relay=relay, started=started)
        _workers_warm(list(workers.values()), webhook=webhooks[min(WEBHOOK_DELAYS_MS)])
        print(f"Latency: {args.latency_samples} jobs one at a time")
        latency = _latency_idle(args, webs["conveyor"])
        print(f"End to end: {args.rounds} rounds of {args.jobs} no-op jobs per side")
        e2e = _drain_measure(args, sides=[workers[name] for name in ("stock", "baseline", "conveyor")],
                             jobs=args.jobs, webhook=None, targets=END_TO_END_TARGETS, servers=servers,
                             staff_cookie=staff_cookie, conveyor_web=webs["conveyor"],
                             profile=profiles / "worker.raw" if profiles else None)
        rate = e2e["throughput"]["conveyor"]["median"] / 2
        print(f"Latency under load: {rate:,.0f} submissions/s for {args.loaded_latency_seconds:g} s")
        latency_loaded = _latency_loaded(args, webs["conveyor"], rate=rate)
        real_work = []
        for delay_ms, jobs in zip(WEBHOOK_DELAYS_MS, (args.webhook_jobs, args.webhook_fast_jobs), strict=True):
            print(f"Real work: {args.rounds} rounds of {jobs} webhook deliveries answered after {delay_ms} ms")
            profile = profiles / f"worker-webhook-{delay_ms}ms.raw" if profiles else None
            real_work.append(_drain_measure(
                args, sides=[workers[name] for name in ("threads", "prefork", "conveyor")], jobs=jobs,
                webhook=webhooks[delay_ms], targets=REAL_WORK_TARGETS.get(delay_ms, {}), servers=servers,
                staff_cookie=staff_cookie, conveyor_web=webs["conveyor"], profile=profile))
        backlog = None
        if args.large:
            print(f"Backlog: {args.backlog_jobs:,} jobs and {args.backlog_retrying:,} in retry backoff")
            backlog = _backlog_measure(args, webs["conveyor"], workers["conveyor"], relay=relay, env=env,
                                       log_dir=log_dir, staff_cookie=staff_cookie)
    finally:
        _processes_stop(started)
        _queues_purge(_queues())
    machine["load_average_end"] = _load_average()
    results = {
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "webs": {web.name: {"label": web.label, "url": web.submit_url} for web in webs.values()},
        "workers": {worker.name: {"label": worker.label, "command": worker.command} for worker in workers.values()},
        "submit": submit,
        "end_to_end": e2e,
        "real_work": real_work,
        "latency": latency,
        "latency_loaded": latency_loaded,
        "memory": {
            "web": {web.name: _mib(web.rss) for web in (webs["baseline"], webs["conveyor"])},
            "worker": {worker.name: _mib(worker.rss) for worker in workers.values()},
        },
        "backlog": backlog,
    }
    json_path, md_path = report.results_write(results, output=args.output)
    table = md_path.read_text()
    if not args.no_readme:
        report.readme_update(processes.ROOT / "README.md", table)
    print(f"\n{table}\nWrote {json_path} and {md_path}.")
    return results


def _mib(rss: dict[str, int]) -> dict[str, float]:
    return {f"{state}_mib": round(rss.get(state, 0) / MIB, 1) for state in ("idle", "load")}


# --- Setup ---------------------------------------------------------------------


def _setup() -> None:
    database_ensure_exists()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    _queues_reset()
    _tables_truncate()


def _queues() -> list[Any]:
    """Every queue the benchmark fills: Conveyor's job and dead-letter queues, then each baseline's."""
    return [*broker.job_queues(), broker.dead_queue(), *baseline.app.conf.task_queues, *stock.app.conf.task_queues]


def _queues_reset() -> None:
    queues_reset(_queues())


def queues_reset(queues: list[Any]) -> None:
    """Declare `queues` (anew when their arguments changed) and empty them."""
    with conveyor_app.connection_for_write() as conn:
        for queue in queues:
            try:
                queue(conn.channel()).declare()
            except PreconditionFailed:
                queue(conn.channel()).delete()
                queue(conn.channel()).declare()
    _queues_purge(queues)


def _queues_purge(queues: list[Any]) -> None:
    with conveyor_app.connection_for_write() as conn:
        for queue in queues:
            conn.default_channel.queue_purge(queue.name)


def _tables_truncate() -> None:
    tables = [model._meta.db_table for model in (JobAttempt, Job, TaskResult)]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")


def _postgres_version() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return cursor.fetchone()[0].split()[0]


def _rabbitmq_version() -> str:
    with conveyor_app.connection_for_write() as conn:
        conn.connect()
        return conn.connection.server_properties.get("version", "unknown")


def _servers() -> dict[str, list[int]]:
    """PostgreSQL's postmaster and RabbitMQ's node, whose CPU (with their children's) counts for every side."""
    return {
        "postgres": processes.server_pids("postgres", port=int(connection.settings_dict["PORT"] or 5432)),
        "rabbitmq": processes.server_pids("beam.smp", port=urlsplit(conveyor_app.conf.broker_url).port or 5672),
    }


def _load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _staff_session_cookie() -> str:
    """A signed-in superuser's session cookie, for the admin and the job list page."""
    staff, _ = get_user_model().objects.get_or_create(username="bench-staff", defaults={
        "is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(staff)
    return f"sessionid={client.cookies['sessionid'].value}"


def _processes_stop(started: list[Process]) -> None:
    """SIGTERM to every process at once, then wait for each: a worker busy at the end takes up to its
    soft-shutdown timeout."""
    for process in started:
        process.send(signal.SIGTERM)
    for process in started:
        process.stop()


def _webs_start(args: Namespace, *, env: dict[str, str], log_dir: Path, token: str,
                started: list[Process]) -> tuple[dict[str, Web], Process]:
    web_line = processes.procfile_command("web")
    if "config.wsgi:application" not in web_line:
        raise LookupError(f"Expected config.wsgi:application in the Procfile's web line {web_line!r}.")
    conveyor_port, baseline_port = processes.free_port(), processes.free_port()
    conveyor_web = processes.start("conveyor-web", web_line, env={**env, "WEB_BIND": f"127.0.0.1:{conveyor_port}"},
                                   log_dir=log_dir)
    baseline_web = processes.start(
        "baseline-web",
        web_line.replace("config.wsgi:application", "bench.baseline.wsgi:application"),
        env={**env, "WEB_BIND": f"127.0.0.1:{baseline_port}", "DJANGO_SETTINGS_MODULE": "bench.baseline.settings"},
        log_dir=log_dir,
    )
    relay = processes.start("conveyor-relay", _relay_command(), env=env, log_dir=log_dir)
    started.extend([conveyor_web, baseline_web, relay])
    base_url = f"http://127.0.0.1:{baseline_port}"
    webs = [
        Web("conveyor", "Conveyor's API", conveyor_web, f"http://127.0.0.1:{conveyor_port}/api/jobs/",
            {"Authorization": f"Bearer {token}"}),
        Web("baseline", "bare `delay()` view", baseline_web, f"{base_url}/submit/", {}),
        Web("confirmed", "`delay()` view with publisher confirms", baseline_web, f"{base_url}/submit/confirmed/", {}),
    ]
    for web in webs:
        wait_until(lambda web=web: _answers(web.submit_url), timeout=60, what=f"{web.name}'s web to answer")
    return {web.name: web for web in webs}, relay


def _answers(url: str) -> bool:
    client = load.KeepAliveClient(url, timeout=2)
    try:
        client.request("GET", path="/healthz")
    except OSError:
        return False
    finally:
        client.close()
    return True


def _receiver_start(*, env: dict[str, str], log_dir: Path, started: list[Process]) -> str:
    """Start the webhook receiver of the real work, in a process of its own; its base URL."""
    port = processes.free_port()
    process = processes.start("receiver", f"python -m bench.receiver --port {port}", env=env, log_dir=log_dir)
    started.append(process)
    processes.wait_ready(process, receiver.READY)
    return f"http://127.0.0.1:{port}"


def _receiver_stats(receiver_url: str, *, reset: bool = False) -> dict[str, int]:
    """The receiver's counts since its last reset (`reset`: start them again)."""
    client = load.KeepAliveClient(receiver_url)
    try:
        if reset:
            status, body = client.request("POST", body=b"", path="/stats/reset")
        else:
            status, body = client.request("GET", path="/stats")
    finally:
        client.close()
    if status != 200:
        raise RuntimeError(f"The webhook receiver answered {status}: {body[:200]!r}")
    return json.loads(body)


def _webhooks_create(receiver_url: str, *, owner: AbstractBaseUser) -> dict[int, Webhook]:
    """One endpoint of `owner` per delay: Conveyor delivers to a user's endpoints, the stock task to a URL."""
    WebhookEndpoint.objects.filter(owner=owner).delete()
    webhooks = {}
    for delay_ms in WEBHOOK_DELAYS_MS:
        endpoint = WebhookEndpoint.objects.create(owner=owner, url=f"{receiver_url}/hook/{delay_ms}",
                                                  description=f"bench receiver, {delay_ms} ms")
        webhooks[delay_ms] = Webhook(delay_ms, receiver_url, endpoint.id, owner)
    return webhooks


def _workers_start(args: Namespace, *, env: dict[str, str], log_dir: Path, webs: dict[str, Web], relay: Process,
                   started: list[Process]) -> dict[str, Worker]:
    """Conveyor's worker (the Procfile's worker line) and every baseline's (a plain `celery worker` line at the
    same CPU priority, with the pool, concurrency and prefetch Conveyor's default queue declares, or the stock
    threads and prefork setups), started together."""
    line = processes.procfile_command("worker")
    execution = queue_execution("default")
    baseline_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.baseline.settings"}
    stock_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.baseline.stock_settings"}

    def celery(app: str, pool: str, concurrency: int, prefetch: int) -> str:
        priority = line.split(" python ", 1)[0]  # REMAP_SIGTERM and nice, as Conveyor's worker runs
        return (f"{priority} celery -A {app} worker --loglevel INFO --pool {pool} --concurrency {concurrency} "
                f"--prefetch-multiplier {prefetch}")

    same = (execution.pool, execution.concurrency, execution.prefetch_multiplier)
    queues, baseline_web = stock_settings.STOCK_QUEUES, webs["baseline"].process
    workers = [
        Worker("conveyor", "Conveyor", conveyor_app, broker.queue_name("default"), f"{line} -- --include bench.kinds",
               env, webs["conveyor"].process, relay),
        Worker("baseline", "Celery, results off", baseline.app, baseline.settings.BASELINE_QUEUE,
               celery("bench.baseline", *same), baseline_env, baseline_web),
        Worker("stock", "Celery + django-celery-results, Conveyor's pool", stock.app, queues["results"],
               celery("bench.baseline.stock", *same), stock_env, baseline_web),
        Worker("threads", f"Celery threads ×{STOCK_THREADS} + django-celery-results", stock.app, queues["threads"],
               celery("bench.baseline.stock", "threads", STOCK_THREADS, 1), stock_env, baseline_web),
        Worker("prefork", f"Celery prefork ×{STOCK_PROCESSES} + django-celery-results", stock.app,
               queues["prefork"], celery("bench.baseline.stock", "prefork", STOCK_PROCESSES, 1), stock_env,
               baseline_web),
    ]
    host = socket.gethostname()
    for worker in workers:
        node = f"{args.queue_prefix}{worker.name}"
        worker.nodename = f"{node}@{host}"
        worker.command += f" --hostname {node}@%h" + ("" if worker.name == "conveyor" else f" --queues {worker.queue}")
        worker.process = processes.start(f"{worker.name}-worker", worker.command, env=worker.env, log_dir=log_dir)
        started.append(worker.process)
    for worker in workers:
        processes.wait_ready(worker.process, " ready.")
    return {worker.name: worker for worker in workers}


def _works(worker: Worker, webhook: Webhook) -> list[Webhook | None]:
    """What `worker` drains in the measurements: no-op jobs (None), webhook deliveries, or both."""
    return ([None] if worker.name in ("conveyor", "baseline", "stock") else []) + (
        [webhook] if worker.name in ("conveyor", "threads", "prefork") else [])


def _workers_warm(workers: list[Worker], *, webhook: Webhook) -> None:
    """Run a few jobs of each work through every worker so imports and connections are made, then read idle memory."""
    with _broker_channel() as channel:
        for worker in workers:
            for work in _works(worker, webhook):
                _tables_truncate()
                _seed(worker, WARM_JOBS, webhook=work)
                _drained(worker, WARM_JOBS, channel, timeout=60)
                _outcomes_check(worker, WARM_JOBS)
    time.sleep(1)
    for worker in workers:
        worker.rss["idle"] = worker.process.rss_bytes()
    _tables_truncate()


# --- Measurements -----------------------------------------------------------------


def _alternating(sides: list[Any], round_index: int) -> list[Any]:
    return sides if round_index % 2 == 0 else sides[::-1]


def _paired_ratio(baseline_values: list[float], conveyor_values: list[float]) -> float:
    """The median over rounds of Conveyor / baseline, each pair measured back to back."""
    return statistics.median(c / b for b, c in zip(baseline_values, conveyor_values, strict=True) if b)


def _compared(values: dict[str, list[float]], targets: dict[str, float], *, digits: int = 1) -> dict[str, Any]:
    """Each side's rounds and median, and Conveyor's paired ratio to every other side with its target."""
    compared: dict[str, Any] = {name: {"rounds": [round(value, digits) for value in rounds],
                                       "median": round(statistics.median(rounds), digits)}
                                for name, rounds in values.items()}
    compared["ratios"] = {}
    for name, rounds in values.items():
        if name == "conveyor":
            continue
        ratio, target = _paired_ratio(rounds, values["conveyor"]), targets.get(name)
        compared["ratios"][name] = {"ratio": round(ratio, 3), "target": target,
                                    "met": None if target is None else ratio >= target}
    return compared


def _submit_measure(args: Namespace, *, webs: list[Web], generator: str, profiles: Path | None) -> dict[str, Any]:
    def run(web: Web, seconds: float) -> load.LoadResult:
        result = load.post_load(generator=generator, url=web.submit_url, body=NOOP_BODY, headers=web.headers,
                                seconds=seconds, connections=args.connections)
        if result.non_2xx or result.socket_errors or not result.requests:
            raise RuntimeError(f"{web.name}'s web failed under load: {result} (see {web.process.log})")
        return result

    for web in webs:
        run(web, args.warmup_seconds)
    _queues_purge(_queues())
    time.sleep(1)
    for web in webs:
        web.rss["idle"] = web.process.rss_bytes()
    measured: dict[str, list[load.LoadResult]] = {web.name: [] for web in webs}
    for index in range(args.rounds):
        for web in _alternating(webs, index):
            profile = profiles / "web.raw" if profiles and web.name == "conveyor" and index == 0 else None
            with RssSampler(web.process) as sampler, profiled(web.process, profile):
                measured[web.name].append(run(web, args.submit_seconds))
            web.rss["load"] = max(web.rss.get("load", 0), sampler.peak)
            print(f"  round {index + 1} {web.name}: {measured[web.name][-1].per_second:,.0f} requests/s")
        _queues_purge(_queues())
    # Requests the load generator abandoned at its deadline still finish; let them, then clear up.
    time.sleep(2)
    _queues_purge(_queues())
    _tables_truncate()
    throughput = _compared({name: [result.per_second for result in results] for name, results in measured.items()},
                           SUBMIT_TARGETS)
    for name, results in measured.items():
        throughput[name]["p50_ms"] = round(statistics.median(result.p50_ms for result in results), 2)
        throughput[name]["p99_ms"] = round(statistics.median(result.p99_ms for result in results), 2)
    return {"throughput": throughput}


def _answered(replies: list[tuple[int, bytes, float]]) -> dict[uuid.UUID, float]:
    """Each submitted job's id and the moment the client read its 202."""
    answered = {}
    for status, body, at in replies:
        if status != 202:
            raise RuntimeError(f"Conveyor answered {status} to a submission: {body[:500]!r}")
        answered[uuid.UUID(json.loads(body)["id"])] = at
    return answered


def _start_latencies(answered: dict[uuid.UUID, float]) -> list[float]:
    """Milliseconds from each 202 to its job's start, once every job has finished."""
    finished = Job.objects.filter(status__in=Job.FINISHED)
    wait_until(lambda: finished.count() >= len(answered), timeout=120 + len(answered) / 50,
               what="the latency jobs to finish")
    started = dict(Job.objects.values_list("id", "started_at"))
    return [(started[job_id].timestamp() - at) * 1000 for job_id, at in answered.items()]


def _latency_summary(latencies: list[float], targets_ms: dict[str, float]) -> dict[str, Any]:
    summary: dict[str, Any] = {"samples": len(latencies), "max_ms": round(max(latencies), 2)}
    for stat in ("p50", "p99"):
        value = load.percentile(latencies, int(stat[1:]))
        summary[f"{stat}_ms"] = round(value, 2)
        if stat in targets_ms:
            summary[f"{stat}_target_ms"], summary[f"{stat}_met"] = targets_ms[stat], value <= targets_ms[stat]
    return summary


def _latency_idle(args: Namespace, conveyor: Web) -> dict[str, Any]:
    _tables_truncate()
    client = load.KeepAliveClient(conveyor.submit_url)
    replies = []
    for _ in range(args.latency_samples):
        status, body = client.request("POST", body=NOOP_BODY, headers=conveyor.headers)
        replies.append((status, body, time.time()))
        time.sleep(args.latency_gap_ms / 1000)
    client.close()
    return _latency_summary(_start_latencies(_answered(replies)), IDLE_LATENCY_TARGETS_MS)


def _latency_loaded(args: Namespace, conveyor: Web, *, rate: float) -> dict[str, Any]:
    """202 to start while submissions arrive steadily at `rate` a second (half the end-to-end throughput)."""
    _tables_truncate()
    replies = load.paced_post(url=conveyor.submit_url, body=NOOP_BODY, headers=conveyor.headers, rate=rate,
                              seconds=args.loaded_latency_seconds, connections=args.connections)
    summary = _latency_summary(_start_latencies(_answered(replies)), LOADED_LATENCY_TARGETS_MS)
    return {"rate_per_second": round(rate, 1), "seconds": args.loaded_latency_seconds, **summary}


@contextmanager
def _broker_channel() -> Iterator[Any]:
    with Connection(conveyor_app.conf.broker_url) as conn:
        yield conn.default_channel


def _depth(channel: Any, queue: str) -> int:
    """Messages ready in `queue` (not those a worker holds unacknowledged)."""
    return channel.queue_declare(queue=queue, passive=True).message_count


def _consumer_control(worker: Worker, action: str) -> None:
    """Stop (cancel_consumer) or resume (add_consumer) the worker consuming its queue."""
    reply = getattr(worker.app.control, action)(worker.queue, destination=[worker.nodename], reply=True, timeout=10)
    if not reply:
        raise RuntimeError(f"{worker.name}'s worker did not answer {action}.")


def _seed(worker: Worker, jobs: int, *, webhook: Webhook | None) -> None:
    """Queue `jobs` no-op jobs, or deliveries to `webhook`, as each side's users submit them."""
    if worker.name == "conveyor" and webhook is None:
        for _ in range(jobs):
            job_submit(kind="diagnostics.noop", params={}, submitted_by=None)
    elif worker.name == "conveyor":
        for number in range(jobs):
            job_submit(kind="webhooks.deliver", submitted_by=webhook.owner, params={
                "endpoint": webhook.endpoint_id, "event": WEBHOOK_EVENT, "payload": {"number": number}})
    elif webhook is not None:
        for number in range(jobs):
            stock.deliver_task.apply_async((webhook.url, {"event": WEBHOOK_EVENT, "data": {"number": number}}),
                                           queue=worker.queue)
    elif worker.app is stock.app:
        for _ in range(jobs):
            stock.noop_task.apply_async(queue=worker.queue)
    else:
        for _ in range(jobs):
            baseline.noop_task.delay()


def _drained(worker: Worker, jobs: int, channel: Any, *, timeout: float) -> None:
    """Wait until `worker` has done `jobs`: Conveyor's jobs finished, the stock results stored, the bare queue empty."""
    what = f"{jobs} jobs of {worker.name}'s worker to be done"
    if worker.app is baseline.app:
        wait_until(lambda: _depth(channel, worker.queue) == 0, timeout=timeout, interval=POLL, what=what)
        return
    done = Job.objects.filter(status__in=Job.FINISHED) if worker.name == "conveyor" else TaskResult.objects.all()
    wait_until(lambda: done.count() >= jobs, timeout=timeout, interval=POLL, what=what)


def _outcomes_check(worker: Worker, jobs: int) -> None:
    """Every job drained succeeded (Conveyor's jobs and the stock results; the bare worker keeps no outcome)."""
    if worker.name == "conveyor":
        statuses = collections.Counter(Job.objects.values_list("status", flat=True))
        succeeded = statuses[Job.Status.SUCCEEDED]
    elif worker.app is stock.app:
        statuses = collections.Counter(TaskResult.objects.values_list("status", flat=True))
        succeeded = statuses["SUCCESS"]
    else:
        return
    if succeeded != jobs:
        raise RuntimeError(f"Expected {jobs} successes of {worker.name}'s worker, found {dict(statuses)} "
                           f"(see {worker.process.log}).")


def _drain_measure(args: Namespace, *, sides: list[Worker], jobs: int, webhook: Webhook | None,
                   targets: dict[str, float], servers: dict[str, list[int]], staff_cookie: str, conveyor_web: Web,
                   profile: Path | None) -> dict[str, Any]:
    """Queue `jobs` while each side's consumer is paused, then time their drain; the CPU of every process
    involved is read from just before the jobs are queued until the last one is done."""
    rates: dict[str, list[float]] = {side.name: [] for side in sides}
    cpu: dict[str, list[dict[str, float]]] = {side.name: [] for side in sides}
    peaks: dict[str, list[int]] = {side.name: [] for side in sides}
    persisted: dict[str, bool] = {}
    with _broker_channel() as channel:
        for index in range(args.rounds):
            for side in _alternating(sides, index):
                _tables_truncate()
                _consumer_control(side, "cancel_consumer")
                roots = {**side.cpu_roots(), **servers}
                before = processes.cpu_seconds(roots)
                _seed(side, jobs, webhook=webhook)
                wait_until(lambda side=side: _depth(channel, side.queue) >= jobs, timeout=120,
                           what=f"{jobs} messages in {side.queue}")
                if webhook:
                    _receiver_stats(webhook.receiver_url, reset=True)
                sampled = profile if side.name == "conveyor" and index == 0 else None
                with RssSampler(side.process) as sampler, profiled(side.process, sampled):
                    began = time.monotonic()
                    _consumer_control(side, "add_consumer")
                    _drained(side, jobs, channel, timeout=jobs / 5 + 60)
                    elapsed = time.monotonic() - began
                after = processes.cpu_seconds(roots)
                if any(after[role] < before[role] for role in after):
                    raise RuntimeError(f"A process counted in {side.name}'s CPU exited during the drain (a server "
                                       f"restarted?): {before} then {after}.")
                cpu[side.name].append({role: after[role] - before[role] for role in after})
                side.rss["load"] = max(side.rss.get("load", 0), sampler.peak)
                rates[side.name].append(jobs / elapsed)
                _outcomes_check(side, jobs)
                if webhook:
                    stats = _receiver_stats(webhook.receiver_url)
                    if stats["answered"] < jobs:
                        raise RuntimeError(f"The receiver answered {stats['answered']} of {jobs} deliveries.")
                    peaks[side.name].append(stats["peak_in_flight"])
                print(f"  round {index + 1} {side.name}: {rates[side.name][-1]:,.0f} jobs/s"
                      + (f", peak {peaks[side.name][-1]} in flight" if webhook else ""))
                if side.name == "conveyor" and webhook is None:
                    persisted = _results_persisted(jobs, conveyor=conveyor_web, staff_cookie=staff_cookie)
    _tables_truncate()
    per_1000 = {name: [sum(window.values()) / jobs * 1000 for window in windows] for name, windows in cpu.items()}
    measured: dict[str, Any] = {
        "jobs": jobs,
        "throughput": _compared(rates, targets),
        "cpu_per_1000": {
            **_compared(per_1000, {}, digits=3),
            "by_role": {name: {role: round(statistics.median(window[role] for window in windows) / jobs * 1000, 3)
                               for role in windows[0]} for name, windows in cpu.items()},
        },
        **persisted,
    }
    if webhook:
        measured["delay_ms"] = webhook.delay_ms
        measured["peak_in_flight"] = {name: max(values) for name, values in peaks.items()}
    return measured


def _results_persisted(jobs: int, *, conveyor: Web, staff_cookie: str) -> dict[str, bool]:
    """Every job succeeded with its result in its attempt's row in PostgreSQL, and the admin shows the job."""
    succeeded = Job.objects.filter(status=Job.Status.SUCCEEDED).count()
    attempts = JobAttempt.objects.filter(outcome=JobAttempt.Outcome.SUCCEEDED, result__isnull=False)
    results = attempts.count()
    sample = attempts.values_list("job_id", flat=True).first()
    client = load.KeepAliveClient(conveyor.submit_url)
    status, page = client.request("GET", path=f"/admin/jobs/job/{sample}/change/", headers={"Cookie": staff_cookie})
    client.close()
    return {
        "results_in_postgres": succeeded == jobs and results == jobs,
        "admin_shows_results": status == 200 and str(sample).encode() in page,
    }


def _page_latencies(url: str, cookie: str, *, count: int | None = None, stop: threading.Event | None = None,
                    interval: float = 0.0) -> list[float]:
    """Milliseconds of GET `url` as a signed-in operator: `count` times, or until `stop` is set."""
    client = load.KeepAliveClient(url)
    latencies: list[float] = []
    while (count is None or len(latencies) < count) and not (stop and stop.is_set()):
        began = time.perf_counter()
        status, _ = client.request("GET", headers={"Cookie": cookie})
        latencies.append((time.perf_counter() - began) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {url} answered {status}.")
        if interval:
            time.sleep(interval)
    client.close()
    return latencies


def _backlog_record(args: Namespace) -> None:
    """Record the backlog's jobs (the retrying kind first, so its first attempts run early) in batches."""
    def record(kind: str, params: Callable[[int], dict], total: int) -> None:
        for start in range(0, total, BACKLOG_BATCH):
            batch = range(start, min(total, start + BACKLOG_BATCH))
            due = timezone.now()
            Job.objects.bulk_create(Job(kind=kind, params=params(index), queue="default", due_at=due)
                                    for index in batch)

    half = max(1, args.backlog_wait // 2)
    # Waits spread over the second half of --backlog-wait, so the retries come back while the backlog drains.
    spread = args.backlog_wait - half + 1
    record("bench.retry_once", lambda index: {"wait": half + index % spread}, args.backlog_retrying)
    record("diagnostics.noop", lambda index: {}, args.backlog_jobs)


def _backlog_measure(args: Namespace, conveyor: Web, worker: Worker, *, relay: Process, env: dict[str, str],
                     log_dir: Path, staff_cookie: str) -> dict[str, Any]:
    page_url = conveyor.submit_url.replace("/api/jobs/", "/jobs/")
    empty_pages = _page_latencies(page_url, staff_cookie, count=args.page_samples, interval=PAGE_INTERVAL)
    worker_idle = worker.process.rss_by_pid()
    total = args.backlog_jobs + args.backlog_retrying
    _consumer_control(worker, "cancel_consumer")
    # The harness publishes the recorded jobs through the outbox relay itself, the relay process stopped
    # meanwhile, so the backlog is queued before the workers start on it.
    relay.stop()
    _backlog_record(args)
    with JobPublisher() as publisher:
        while outbox_relay(publisher=publisher).published:
            pass
    relay = processes.start("conveyor-relay-2", _relay_command(), env=env, log_dir=log_dir)
    # Idle: the backlog is recorded and queued, and nothing consumes it yet, so the page shows the rows
    # it shows while the backlog drains. The page of an empty list is reported beside it. VACUUM first,
    # so autovacuum is not still at the freshly written rows while the idle page is timed.
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {Job._meta.db_table}")
    idle_pages = _page_latencies(page_url, staff_cookie, count=args.page_samples, interval=PAGE_INTERVAL)
    stop = threading.Event()
    pages: list[float] = []
    sampler_thread = threading.Thread(
        target=lambda: pages.extend(_page_latencies(page_url, staff_cookie, stop=stop, interval=PAGE_INTERVAL)))
    unfinished = Job.objects.filter(status__in=(Job.Status.QUEUED, Job.Status.RUNNING, Job.Status.RETRYING))
    try:
        with RssSampler(worker.process, interval=1.0) as sampler:
            began = time.monotonic()
            _consumer_control(worker, "add_consumer")
            sampler_thread.start()
            wait_until(lambda: not unfinished.exists(), timeout=total / 20 + args.backlog_wait + 600, interval=1.0,
                       what="the backlog to drain")
            elapsed = time.monotonic() - began
            stop.set()
            sampler_thread.join()
    finally:
        relay.stop()
    succeeded = Job.objects.filter(status=Job.Status.SUCCEEDED).count()
    _tables_truncate()
    idle_p99, page_p99 = load.percentile(idle_pages, 99), load.percentile(pages, 99)
    return {
        "jobs": args.backlog_jobs,
        "retrying": args.backlog_retrying,
        "total": total,
        "succeeded": succeeded,
        "all_succeeded": succeeded == total,
        "drain_seconds": round(elapsed, 1),
        "jobs_per_second": round(total / elapsed, 1),
        "worker_rss_idle_mib": round(sum(worker_idle.values()) / MIB, 1),
        "worker_rss_peak_mib": round(sampler.peak / MIB, 1),
        "worker_rss_ratio": round(sampler.peak / sum(worker_idle.values()), 3),
        "worker_rss_met": sampler.peak <= 1.2 * sum(worker_idle.values()),
        # Each process's idle and peak resident memory (the shell, Celery's main process, pool children).
        "worker_rss_by_process_mib": {str(pid): [round(worker_idle.get(pid, 0) / MIB, 1), round(peak / MIB, 1)]
                                      for pid, peak in sampler.peaks.items()},
        "page": "/jobs/",
        "page_empty_p50_ms": round(load.percentile(empty_pages, 50), 2),
        "page_empty_p99_ms": round(load.percentile(empty_pages, 99), 2),
        "page_idle_p50_ms": round(load.percentile(idle_pages, 50), 2),
        "page_p50_ms": round(load.percentile(pages, 50), 2),
        "page_idle_p99_ms": round(idle_p99, 2),
        "page_p99_ms": round(page_p99, 2),
        "page_samples": len(pages),
        "page_ratio": round(page_p99 / idle_p99, 3),
        "page_met": page_p99 < 2 * idle_p99,
    }
