"""The measurements: submit throughput, end-to-end drain, 202-to-start latency, memory and the backlog.

Runs inside the harness after django.setup(), on the benchmark's own database and queues.
"""
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

from amqp.exceptions import PreconditionFailed
from celery import Celery
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from kombu import Connection

import bench.kinds  # noqa: F401  (registers bench.retry_once, the backlog's retrying kind)
from apps.jobs.models import Job, JobAttempt
from apps.jobs.publishing import JobPublisher
from apps.jobs.relay import outbox_relay
from apps.jobs.services import api_token_create, job_submit
from apps.ops.bootstrap import database_ensure_exists
from bench import load, processes, report
from bench.baseline import celery as baseline
from bench.processes import Process, RssSampler, wait_until
from bench.profile import profiled
from config import broker
from config.celery import app as conveyor_app

MIB = 1024 * 1024
NOOP_BODY = json.dumps({"kind": "diagnostics.noop", "params": {}}).encode()
# Rows per INSERT when the backlog is recorded: big enough to go fast, small enough to bound memory.
BACKLOG_BATCH = 10_000
# Seconds between checks while waiting on a queue or the database.
POLL = 0.005
# Seconds between samples of the job list page, idle and while the backlog drains.
PAGE_INTERVAL = 0.25


def _relay_command() -> str:
    """The Procfile's relay, also knowing the backlog's retrying kind, whose retries it publishes when due."""
    return f"{processes.procfile_command('relay')} --include bench.kinds"


@dataclass
class Side:
    """Conveyor or the baseline: its web, its worker, where it submits and where its messages go."""

    name: str
    web: Process
    submit_url: str
    headers: dict[str, str]
    app: Celery
    queue: str
    nodename: str
    worker: Process | None = None
    rss: dict[str, dict[str, int]] = field(default_factory=lambda: {"web": {}, "worker": {}})


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
    token, _ = api_token_create(username="bench")
    staff_cookie = _staff_session_cookie()
    started: list[Process] = []
    try:
        conveyor, base, relay = _webs_start(args, env=env, log_dir=log_dir, token=token)
        started += [conveyor.web, base.web, relay]
        sides = [base, conveyor]
        print(f"Submit throughput: {args.rounds} rounds of {args.submit_seconds:g} s per side ({generator})")
        submit = _submit_measure(args, sides=sides, generator=generator, profiles=profiles)
        for side in sides:
            side.worker = _worker_start(side, env=env, log_dir=log_dir)
            started.append(side.worker)
        _workers_warm(sides)
        print(f"Latency: {args.latency_samples} jobs one at a time")
        latency = _latency_measure(args, conveyor)
        print(f"End to end: {args.rounds} rounds of {args.jobs} jobs per side")
        e2e = _drain_measure(args, sides=sides, staff_cookie=staff_cookie, profiles=profiles)
        backlog = None
        if args.large:
            print(f"Backlog: {args.backlog_jobs:,} jobs and {args.backlog_retrying:,} in retry backoff")
            backlog = _backlog_measure(args, conveyor, relay=relay, env=env, log_dir=log_dir, staff_cookie=staff_cookie)
    finally:
        _processes_stop(started)
        _queues_purge()
    machine["load_average_end"] = _load_average()
    results = {
        "started_at": started_at.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine,
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "submit": submit,
        "end_to_end": e2e,
        "latency": latency,
        "memory": {role: {side.name: {f"{state}_mib": round(side.rss[role][state] / MIB, 1)
                                      for state in ("idle", "load")} for side in sides}
                   for role in ("web", "worker")},
        "backlog": backlog,
    }
    json_path, md_path = report.results_write(results, output=args.output)
    table = md_path.read_text()
    if not args.no_readme:
        report.readme_update(processes.ROOT / "README.md", table)
    print(f"\n{table}\nWrote {json_path} and {md_path}.")
    return results


# --- Setup ---------------------------------------------------------------------


def _setup() -> None:
    database_ensure_exists()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    _queues_reset()
    _tables_truncate()


def _queue_names() -> list[str]:
    return [queue.name for queue in broker.job_queues()] + [broker.dead_queue().name, baseline.settings.BASELINE_QUEUE]


def _queues_reset() -> None:
    """Declare the benchmark's queues (anew when their arguments changed) and empty them.

    Never deleted: a deleted queue loses its delayed-delivery binding, and a retry still waiting
    in RabbitMQ for it would block the delay queues every app on this broker shares.
    """
    with conveyor_app.connection_for_write() as conn:
        queues = [*broker.job_queues(), broker.dead_queue(), baseline.app.conf.task_queues[0]]
        for queue in queues:
            try:
                queue(conn.channel()).declare()
            except PreconditionFailed:
                queue(conn.channel()).delete()
                queue(conn.channel()).declare()
    _queues_purge()


def _queues_purge() -> None:
    with conveyor_app.connection_for_write() as conn:
        for name in _queue_names():
            conn.default_channel.queue_purge(name)


def _tables_truncate() -> None:
    tables = [model._meta.db_table for model in (JobAttempt, Job)]
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
    """SIGTERM to every process at once, then wait for each: Conveyor's worker takes its soft-shutdown
    timeout (20 s by default) even when idle."""
    for process in started:
        process.send(signal.SIGTERM)
    for process in started:
        process.stop()


def _webs_start(args: Namespace, *, env: dict[str, str], log_dir: Path, token: str) -> tuple[Side, Side, Process]:
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
    host = socket.gethostname()
    conveyor = Side("conveyor", conveyor_web, f"http://127.0.0.1:{conveyor_port}/api/jobs/",
                    {"Authorization": f"Bearer {token}"}, conveyor_app, broker.queue_name("default"),
                    f"{args.queue_prefix}conveyor@{host}")
    base = Side("baseline", baseline_web, f"http://127.0.0.1:{baseline_port}/submit/", {}, baseline.app,
                baseline.settings.BASELINE_QUEUE, f"{args.queue_prefix}baseline@{host}")
    for side in (conveyor, base):
        wait_until(lambda side=side: _answers(side.submit_url), timeout=60, what=f"{side.name}'s web to answer")
    return conveyor, base, relay


def _answers(url: str) -> bool:
    client = load.KeepAliveClient(url, timeout=2)
    try:
        client.request("GET", path="/healthz")
    except OSError:
        return False
    finally:
        client.close()
    return True


def _worker_start(side: Side, *, env: dict[str, str], log_dir: Path) -> Process:
    node = side.nodename.split("@")[0]
    line = processes.with_option(processes.procfile_command("worker"), "--hostname", f"{node}@%h")
    line = processes.with_option(line, "--queues", side.queue)
    if side.name == "conveyor":
        command, worker_env = f"{line} --include bench.kinds", env
    else:
        command = processes.with_option(line, "-A", "bench.baseline")
        worker_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.baseline.settings"}
    worker = processes.start(f"{side.name}-worker", command, env=worker_env, log_dir=log_dir)
    processes.wait_ready(worker, " ready.")
    return worker


def _workers_warm(sides: list[Side]) -> None:
    """Run a few jobs through each side so imports and connections are made, then read idle memory."""
    submitted: dict[str, list[str]] = {}
    for side in sides:
        client = load.KeepAliveClient(side.submit_url)
        submitted[side.name] = [json.loads(client.request("POST", body=NOOP_BODY, headers=side.headers)[1])["id"]
                                for _ in range(20)]
        client.close()
    warm = JobAttempt.objects.filter(job_id__in=submitted["conveyor"], outcome=JobAttempt.Outcome.SUCCEEDED)
    wait_until(lambda: warm.count() == 20, timeout=60, what="Conveyor's warm-up jobs")
    with _broker_channel() as channel:
        wait_until(lambda: all(_depth(channel, side.queue) == 0 for side in sides), timeout=60,
                   what="the warm-up messages")
    time.sleep(1)
    for side in sides:
        side.rss["worker"]["idle"] = side.worker.rss_bytes()
    _tables_truncate()


# --- Measurements -----------------------------------------------------------------


def _alternating(sides: list[Side], round_index: int) -> list[Side]:
    return sides if round_index % 2 == 0 else sides[::-1]


def _paired_ratio(baseline_values: list[float], conveyor_values: list[float]) -> float:
    """The median over rounds of Conveyor / baseline, each pair measured back to back."""
    return statistics.median(c / b for b, c in zip(baseline_values, conveyor_values, strict=True) if b)


def _submit_measure(args: Namespace, *, sides: list[Side], generator: str, profiles: Path | None) -> dict[str, Any]:
    def run(side: Side, seconds: float) -> load.LoadResult:
        result = load.post_load(generator=generator, url=side.submit_url, body=NOOP_BODY, headers=side.headers,
                                seconds=seconds, connections=args.connections)
        if result.non_2xx or result.socket_errors or not result.requests:
            raise RuntimeError(f"{side.name}'s web failed under load: {result} (see {side.web.log})")
        return result

    for side in sides:
        run(side, args.warmup_seconds)
    _queues_purge()
    time.sleep(1)
    for side in sides:
        side.rss["web"]["idle"] = side.web.rss_bytes()
    measured: dict[str, list[load.LoadResult]] = {side.name: [] for side in sides}
    for index in range(args.rounds):
        for side in _alternating(sides, index):
            profile = profiles / "web.raw" if profiles and side.name == "conveyor" and index == 0 else None
            with RssSampler(side.web) as sampler, profiled(side.web, profile):
                measured[side.name].append(run(side, args.submit_seconds))
            side.rss["web"]["load"] = max(side.rss["web"].get("load", 0), sampler.peak)
            print(f"  round {index + 1} {side.name}: {measured[side.name][-1].per_second:,.0f} requests/s")
        _queues_purge()
    # Requests the load generator abandoned at its deadline still finish; let them, then clear up.
    time.sleep(2)
    _queues_purge()
    _tables_truncate()
    rates = {name: [result.per_second for result in results] for name, results in measured.items()}
    ratio = _paired_ratio(rates["baseline"], rates["conveyor"])
    return {
        **{name: {"rounds": [round(rate, 1) for rate in rates[name]],
                  "median": round(statistics.median(rates[name]), 1),
                  "p50_ms": round(statistics.median(result.p50_ms for result in results), 2),
                  "p99_ms": round(statistics.median(result.p99_ms for result in results), 2)}
           for name, results in measured.items()},
        "ratio": round(ratio, 3),
        "met": ratio >= 1.0,
    }


def _latency_measure(args: Namespace, conveyor: Side) -> dict[str, Any]:
    client = load.KeepAliveClient(conveyor.submit_url)
    answered: dict[uuid.UUID, float] = {}
    for _ in range(args.latency_samples):
        status, body = client.request("POST", body=NOOP_BODY, headers=conveyor.headers)
        at = time.time()
        if status != 202:
            raise RuntimeError(f"Conveyor answered {status} to a submission: {body[:500]!r}")
        answered[uuid.UUID(json.loads(body)["id"])] = at
        time.sleep(args.latency_gap_ms / 1000)
    client.close()
    # Their results are the last writes of the jobs: once all are in, nothing of them lands after the truncate.
    wait_until(lambda: _succeeded().count() == len(answered), timeout=120,
               what="the latency jobs to finish")
    started = dict(Job.objects.values_list("id", "started_at"))
    latencies = [(started[job_id].timestamp() - at) * 1000 for job_id, at in answered.items()]
    _tables_truncate()
    p50, p99 = load.percentile(latencies, 50), load.percentile(latencies, 99)
    return {
        "samples": len(latencies),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(latencies), 2),
        "p50_met": p50 <= 5,
        "p99_met": p99 <= 25,
    }


@contextmanager
def _broker_channel() -> Iterator[Any]:
    with Connection(conveyor_app.conf.broker_url) as conn:
        yield conn.default_channel


def _depth(channel: Any, queue: str) -> int:
    """Messages ready in `queue` (not those a worker holds unacknowledged)."""
    return channel.queue_declare(queue=queue, passive=True).message_count


def _consumer_control(side: Side, action: str) -> None:
    """Stop (cancel_consumer) or resume (add_consumer) the side's worker consuming its queue."""
    reply = getattr(side.app.control, action)(side.queue, destination=[side.nodename], reply=True, timeout=10)
    if not reply:
        raise RuntimeError(f"{side.name}'s worker did not answer {action}.")


def _seed(side: Side, jobs: int) -> None:
    if side.name == "conveyor":
        for _ in range(jobs):
            job_submit(kind="diagnostics.noop", params={}, submitted_by=None)
    else:
        for _ in range(jobs):
            baseline.noop_task.delay()


def _drain_measure(args: Namespace, *, sides: list[Side], staff_cookie: str, profiles: Path | None) -> dict[str, Any]:
    rates: dict[str, list[float]] = {side.name: [] for side in sides}
    conveyor = next(side for side in sides if side.name == "conveyor")
    with _broker_channel() as channel:
        for index in range(args.rounds):
            for side in _alternating(sides, index):
                _consumer_control(side, "cancel_consumer")
                _seed(side, args.jobs)
                wait_until(lambda side=side: _depth(channel, side.queue) >= args.jobs, timeout=120,
                           what=f"{args.jobs} messages in {side.queue}")
                profile = profiles / "worker.raw" if profiles and side.name == "conveyor" and index == 0 else None
                with RssSampler(side.worker) as sampler, profiled(side.worker, profile):
                    began = time.monotonic()
                    _consumer_control(side, "add_consumer")
                    wait_until(lambda side=side: _depth(channel, side.queue) == 0, timeout=args.jobs / 10 + 60,
                               interval=POLL, what=f"{side.queue} to drain")
                    if side.name == "conveyor":
                        wait_until(lambda: _succeeded().count() >= args.jobs,
                                   timeout=60, interval=POLL, what="every result in PostgreSQL")
                    elapsed = time.monotonic() - began
                side.rss["worker"]["load"] = max(side.rss["worker"].get("load", 0), sampler.peak)
                rates[side.name].append(args.jobs / elapsed)
                print(f"  round {index + 1} {side.name}: {rates[side.name][-1]:,.0f} jobs/s")
                if side.name == "conveyor":
                    persisted = _results_persisted(args.jobs, conveyor=conveyor, staff_cookie=staff_cookie)
                    _tables_truncate()
    ratio = _paired_ratio(rates["baseline"], rates["conveyor"])
    conveyor_median = statistics.median(rates["conveyor"])
    return {
        "jobs": args.jobs,
        **{name: {"rounds": [round(rate, 1) for rate in values], "median": round(statistics.median(values), 1)}
           for name, values in rates.items()},
        "ratio": round(ratio, 3),
        "met": ratio >= 0.8 and conveyor_median >= 1000,
        **persisted,
    }


def _succeeded():
    """Attempts that succeeded: their result is the last write of a job."""
    return JobAttempt.objects.filter(outcome=JobAttempt.Outcome.SUCCEEDED)


def _results_persisted(jobs: int, *, conveyor: Side, staff_cookie: str) -> dict[str, bool]:
    """Every job succeeded with its result row in PostgreSQL, and the admin lists that row."""
    succeeded = Job.objects.filter(status=Job.Status.SUCCEEDED).count()
    results = _succeeded().filter(result__isnull=False).count()
    sample = _succeeded().values_list("job_id", flat=True).first()
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


def _backlog_measure(args: Namespace, conveyor: Side, *, relay: Process, env: dict[str, str], log_dir: Path,
                     staff_cookie: str) -> dict[str, Any]:
    page_url = conveyor.submit_url.replace("/api/jobs/", "/jobs/")
    empty_pages = _page_latencies(page_url, staff_cookie, count=args.page_samples, interval=PAGE_INTERVAL)
    worker_idle = conveyor.worker.rss_by_pid()
    total = args.backlog_jobs + args.backlog_retrying
    _consumer_control(conveyor, "cancel_consumer")
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
        with RssSampler(conveyor.worker, interval=1.0) as sampler:
            began = time.monotonic()
            _consumer_control(conveyor, "add_consumer")
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
