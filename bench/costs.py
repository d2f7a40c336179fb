"""`python -m bench.costs`: what one job costs each part of Conveyor, the figures docs/scaling.md reasons from.

Runs Conveyor's own processes (the Procfile's web, relay and default-queue worker) on a PostgreSQL database
and a RabbitMQ virtual host of their own, and reads, per job:
- CPU of each process tree from /proc (bench/processes.py), and of the PostgreSQL backends serving each
  process: every process connects with its own application_name (PGAPPNAME), so pg_stat_activity names
  the backends of the web, the relay and the worker;
- PostgreSQL: transactions and rows written (pg_stat_database, pg_stat_user_tables), and WAL: how far the
  LSN moved (every database of the server) and the bytes of the records pg_waldump attributes to this
  database (records of its relations, and the commits of their transactions);
- RabbitMQ: messages published, confirmed, delivered and acknowledged in the vhost (management API).

Costs, not throughput: CPU seconds and counts per job hold on a machine other work shares, where jobs per
second do not. Capacities follow from them (jobs/s per core = 1 / CPU seconds per job); docs/scaling.md
says with which assumptions.

Three measurements:
1. Relay backlog: --relay-jobs no-op jobs recorded in one transaction while no worker runs; the relay,
   started with each of --relay-batch-sizes, drains them into RabbitMQ. Each pass stamps its jobs'
   published_at, so the passes are timed by the relay's own clock.
2. End to end: --jobs no-op jobs submitted through the API at --rate a second, run by the worker.
3. Webhooks: --webhook-jobs deliveries to bench/receiver.py, answering after --webhook-delay-ms.
"""
import argparse
import base64
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote, unquote, urlsplit

import django

ROOT = Path(__file__).resolve().parent.parent
APP_PREFIX = "costs-"
# PostgreSQL adds an idle backend's counters to pg_stat_database within 10 s (PGSTAT_IDLE_INTERVAL), and
# RabbitMQ's management plugin collects its counts every 5 s: read them this long after the work.
SETTLE_SECONDS = 11.0
# Seconds between the harness's checks of the database while it waits (each is a transaction it counts).
POLL = 0.1
DATABASE_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
TABLE_COUNTERS = ("inserted", "updated", "hot_updated", "deleted")
MESSAGE_COUNTERS = ("publish", "confirm", "deliver", "ack", "redeliver", "drop_unroutable", "return_unroutable")
WAL_RECORD = re.compile(r"^rmgr: (\S+)\s+len \(rec/tot\):\s*(\d+)/\s*(\d+), tx:\s*(\d+), .*?desc: (\S*)")
WAL_RELATION = re.compile(r"rel \d+/(\d+)/\d+")
# A temporary physical replication slot of the harness's session keeps the WAL of each measurement until
# pg_waldump has read it (a checkpoint would otherwise recycle it); PostgreSQL drops it with the session.
WAL_SLOT = "conveyor_bench_costs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.costs",
        description="Measure what one job costs Conveyor's web, relay, worker, PostgreSQL and RabbitMQ (CPU, "
        "transactions, rows, WAL bytes, messages) and how many jobs a relay pass publishes; writes "
        "bench/results/costs.{json,md}. About three minutes at the defaults.",
    )
    sizes = parser.add_argument_group("sizes")
    sizes.add_argument("--jobs", type=int, default=2000, help="no-op jobs per end-to-end round (default 2000)")
    sizes.add_argument("--rounds", type=int, default=3, help="end-to-end rounds; figures are medians (default 3)")
    sizes.add_argument("--rate", type=float, default=200,
                       help="API submissions a second, steady, below what this machine drains (default 200)")
    sizes.add_argument("--connections", type=int, default=8, help="keep-alive connections submitting (default 8)")
    sizes.add_argument("--webhook-jobs", type=int, default=500,
                       help="webhook deliveries in the webhook round, 0 for none (default 500)")
    sizes.add_argument("--webhook-delay-ms", type=int, default=10,
                       help="how long the receiver takes to answer a delivery (default 10)")
    sizes.add_argument("--relay-jobs", type=int, default=20_000,
                       help="jobs in the outbox when the relay starts draining it (default 20,000)")
    sizes.add_argument("--relay-batch-sizes", default="500",
                       help="CONVEYOR_RELAY_BATCH_SIZE values to drain the backlog with, comma-separated "
                       "(default 500, Conveyor's default)")
    sizes.add_argument("--relay-rounds", type=int, default=1,
                       help="drains of the backlog per batch size, each reported (default 1)")
    sizes.add_argument("--settle-seconds", type=float, default=SETTLE_SECONDS,
                       help="wait after each measurement before reading the counters, so PostgreSQL and "
                       "RabbitMQ have published them (default %(default)s)")
    run = parser.add_argument_group("run")
    run.add_argument("--measure", default="relay,end-to-end,webhooks",
                     help="which measurements, comma-separated (default %(default)s)")
    run.add_argument("--smoke", action="store_true", help="tiny sizes that finish in seconds; the figures mean nothing")
    run.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/conveyor_costs",
                     help="the measurement's own database, created when missing (default %(default)s)")
    run.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672/conveyor-costs",
                     help="RabbitMQ, with a vhost of the measurement's own, created when missing and deleted at "
                     "the end if this run created it; several URLs separated by ';' for a cluster, whose "
                     "nodes' CPU is added up (default %(default)s)")
    run.add_argument("--management-url", default="http://guest:guest@127.0.0.1:15672/api/",
                     help="RabbitMQ's management API (default %(default)s)")
    run.add_argument("--queue-prefix", default=APP_PREFIX, help="prefix of the queues (default %(default)s)")
    run.add_argument("--output", type=Path, default=ROOT / "bench" / "results",
                     help="where costs.json and costs.md go (default bench/results); logs go to artifacts/costs/")
    args = parser.parse_args(argv)
    if args.smoke:
        args.jobs, args.rounds, args.rate, args.connections = 20, 1, 100, 2
        args.webhook_jobs, args.relay_jobs, args.settle_seconds = 10, 300, 0
    args.batch_sizes = [int(size) for size in str(args.relay_batch_sizes).split(",") if size.strip()]
    args.measurements = {name.strip() for name in args.measure.split(",") if name.strip()}
    unknown = args.measurements - {"relay", "end-to-end", "webhooks"}
    if unknown:
        parser.error(f"unknown measurements {sorted(unknown)}: choose among relay, end-to-end, webhooks")
    return args


# --- RabbitMQ's management API -------------------------------------------------------------------


class Management:
    """The few calls of RabbitMQ's HTTP API the measurement needs, with the credentials of its URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{parts.path.rstrip('/')}/"
        credentials = f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
        self.auth = "Basic " + base64.b64encode(credentials.encode()).decode()

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        request = urllib.request.Request(self.base + path, method=method, headers={
            "Authorization": self.auth, "Content-Type": "application/json"},
            data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def vhost_ensure(self, vhost: str, user: str) -> bool:
        """Create `vhost` with every permission for `user` unless it exists; True when this call created it."""
        try:
            self.call("GET", f"vhosts/{quote(vhost, safe='')}")
            return False
        except HTTPError as exc:
            if exc.code != 404:
                raise
        self.call("PUT", f"vhosts/{quote(vhost, safe='')}", {})
        self.call("PUT", f"permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
                  {"configure": ".*", "write": ".*", "read": ".*"})
        return True

    def counts(self, vhost: str) -> dict[str, dict[str, int]]:
        """Messages so far: in the vhost, in each of its queues and its celeryev exchange, and on the whole node."""
        name = quote(vhost, safe="")
        counts = {"vhost": _message_counts(self.call("GET", f"vhosts/{name}")),
                  "node": _message_counts(self.call("GET", "overview"))}
        for queue in self.call("GET", f"queues/{name}?columns=name,message_stats,messages,message_bytes"):
            counts[f"queue:{queue['name']}"] = {**_message_counts(queue), "messages": queue.get("messages", 0),
                                                "message_bytes": queue.get("message_bytes", 0)}
        try:
            events = self.call("GET", f"exchanges/{name}/celeryev")
            counts["events"] = {"publish": events.get("message_stats", {}).get("publish_in", 0)}
        except HTTPError:
            counts["events"] = {"publish": 0}
        return counts


def _message_counts(item: dict) -> dict[str, int]:
    stats = item.get("message_stats") or {}
    return {counter: int(stats.get(counter, 0)) for counter in MESSAGE_COUNTERS}


# --- Meters --------------------------------------------------------------------------------------


@dataclass
class Rig:
    """What the measurement runs on: its processes, its servers' pids, and where the counters are read."""

    args: argparse.Namespace
    env: dict[str, str]
    log_dir: Path
    management: Management
    vhost: str
    database_oid: int
    data_directory: Path
    postgres_pids: list[int]
    rabbitmq_nodes: dict[int, list[int]]  # AMQP port -> the node's beam.smp
    processes: dict[str, Any] = field(default_factory=dict)  # role -> bench.processes.Process
    helpers: list[Any] = field(default_factory=list)  # processes measured in no role (the webhook receiver)
    harness_transactions: int = 0
    vhost_created: bool = False

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        """One statement of the harness's own, counted: its transactions are not a job's."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(sql, params or [])
            rows = cursor.fetchall() if cursor.description else []
        self.harness_transactions += 1
        return rows


@dataclass
class Meters:
    """Every counter at one moment."""

    at: float
    harness_transactions: int
    cpu: dict[str, float]
    rabbitmq_nodes: dict[int, float]
    backends: dict[int, tuple[str, float]]  # pid -> (application_name, CPU seconds)
    database: dict[str, int]
    tables: dict[str, dict[str, int]]
    wal_lsn: str
    wal_position: int
    messages: dict[str, dict[str, int]]
    load_average: float


def meters_read(rig: Rig, *, starts: bool, pending: dict[str, dict[str, int]] | None = None) -> Meters:
    """Read every counter, at the start of a measurement (`starts`) or at its end. `pending`: rows the harness's
    open transaction wrote, counted as if already published (they reach pg_stat_database after this reading,
    and are no job's cost)."""
    from django.db import connection, transaction

    from bench import processes

    # The harness's own earlier statements are published now, before this reading (outside a transaction).
    rig.query("SELECT pg_stat_force_next_flush()")
    rig.query("SELECT 1")
    # The harness's transactions from this reading's own to the next reading's flush above land between the
    # two readings: counted by the difference of this number, and subtracted.
    harness = rig.harness_transactions
    with transaction.atomic(), connection.cursor() as cursor:
        if starts:  # the WAL before this reading may go; the WAL after it stays for pg_waldump
            cursor.execute("SELECT pg_replication_slot_advance(slot_name, pg_current_wal_flush_lsn())"
                           " FROM pg_replication_slots WHERE slot_name = %s"
                           " AND restart_lsn < pg_current_wal_flush_lsn()", [f"{WAL_SLOT}_{os.getpid()}"])
        cursor.execute("SELECT pid, application_name FROM pg_stat_activity"
                       " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        applications = dict(cursor.fetchall())
        cursor.execute(f"SELECT {', '.join(DATABASE_COUNTERS)} FROM pg_stat_database"
                       " WHERE datname = current_database()")
        database = dict(zip(DATABASE_COUNTERS, cursor.fetchone(), strict=True))
        cursor.execute("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables")
        tables = {name: dict(zip(TABLE_COUNTERS, values, strict=True)) for name, *values in cursor.fetchall()}
        cursor.execute("SELECT pg_current_wal_lsn(), pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
        lsn, position = cursor.fetchone()
    rig.harness_transactions += 1
    for name, counts in (pending or {}).items():
        for counter, value in counts.items():
            tables.setdefault(name, dict.fromkeys(TABLE_COUNTERS, 0))[counter] += value
    if pending:
        database["tup_inserted"] += sum(counts["inserted"] for counts in pending.values())
        database["tup_updated"] += sum(counts["updated"] for counts in pending.values())
        database["tup_deleted"] += sum(counts["deleted"] for counts in pending.values())
    backend_cpu = processes.pid_cpu_seconds(list(applications))
    roots = {role: [process.popen.pid] for role, process in rig.processes.items()}
    roots["postgres_server"] = rig.postgres_pids
    roots["rabbitmq"] = [pid for pids in rig.rabbitmq_nodes.values() for pid in pids]
    return Meters(
        at=time.monotonic(),
        harness_transactions=harness,
        cpu=processes.cpu_seconds(roots),
        rabbitmq_nodes={port: processes.cpu_seconds({"node": pids})["node"]
                        for port, pids in rig.rabbitmq_nodes.items()},
        backends={pid: (applications[pid], cpu) for pid, cpu in backend_cpu.items()},
        database=database,
        tables=tables,
        wal_lsn=lsn,
        wal_position=int(position),
        messages=rig.management.counts(rig.vhost),
        load_average=os.getloadavg()[0],
    )


def pending_rows(rig: Rig) -> dict[str, dict[str, int]]:
    """Rows the harness's open transaction has written so far, by table (pg_stat_xact_user_tables)."""
    rows = rig.query("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_xact_user_tables"
                     " WHERE n_tup_ins + n_tup_upd + n_tup_del > 0")
    return {name: dict(zip(TABLE_COUNTERS, values, strict=True)) for name, *values in rows}


def _application_role(name: str) -> str:
    return name.removeprefix(APP_PREFIX) if name.startswith(APP_PREFIX) else "other"


def costs_per_job(rig: Rig, before: Meters, after: Meters, jobs: int) -> dict[str, Any]:
    """What the work between two readings cost, per job."""
    def per(value: float, scale: float = 1.0, digits: int = 3) -> float:
        return round(value * scale / jobs, digits)

    cpu_ms = {role: per(after.cpu[role] - before.cpu[role], 1000) for role in after.cpu}
    backends: dict[str, float] = defaultdict(float)
    for pid, (application, cpu) in after.backends.items():
        previous = before.backends.get(pid)
        backends[_application_role(application)] += cpu - (previous[1] if previous else 0.0)
    backends.pop("harness", None)
    postgres_ms = {role: per(seconds, 1000) for role, seconds in sorted(backends.items())}
    postgres_ms["all"] = round(sum(postgres_ms.values()), 3)
    # A backend that ended between the readings took its CPU with it (its connection closed): named, not counted.
    gone = Counter(_application_role(application) for pid, (application, _) in before.backends.items()
                   if pid not in after.backends and _application_role(application) != "harness")
    harness = after.harness_transactions - before.harness_transactions
    database = {counter: after.database[counter] - before.database[counter] for counter in DATABASE_COUNTERS}
    database["xact_commit"] -= harness
    tables = {}
    for name, counts in after.tables.items():
        earlier = before.tables.get(name, dict.fromkeys(TABLE_COUNTERS, 0))
        changed = {counter: per(counts[counter] - earlier[counter]) for counter in TABLE_COUNTERS}
        if any(changed.values()):
            tables[name] = changed
    messages = {}
    for scope, counts in after.messages.items():
        earlier = before.messages.get(scope, {})
        changed = {counter: per(value - earlier.get(counter, 0)) for counter, value in counts.items()
                   if counter not in ("messages", "message_bytes")}
        if any(changed.values()):
            messages[scope] = changed
    vhost_published = after.messages["vhost"]["publish"] - before.messages["vhost"]["publish"]
    node_published = after.messages["node"]["publish"] - before.messages["node"]["publish"]
    return {
        "jobs": jobs,
        "seconds": round(after.at - before.at, 2),
        "cpu_ms": {
            **{role: cpu_ms[role] for role in rig.processes},
            "postgres_backends": postgres_ms,
            "postgres_server": cpu_ms["postgres_server"],
            "rabbitmq": cpu_ms["rabbitmq"],
            "rabbitmq_nodes": {str(port): per(after.rabbitmq_nodes[port] - before.rabbitmq_nodes[port], 1000)
                               for port in after.rabbitmq_nodes},
        },
        "postgres": {
            **{counter: per(value) for counter, value in database.items()},
            "harness_transactions_subtracted": harness,
            "backends_gone": dict(gone),
            "tables": tables,
        },
        "wal": {"lsn_bytes_all_databases": per(after.wal_position - before.wal_position, digits=1),
                **wal_attributed(rig, before.wal_lsn, after.wal_lsn, jobs)},
        "rabbitmq": messages,
        "other_vhosts_messages_published": node_published - vhost_published,
        "load_average": [round(before.load_average, 2), round(after.load_average, 2)],
    }


def wal_attributed(rig: Rig, start: str, end: str, jobs: int) -> dict[str, Any]:
    """The WAL records between two LSNs that belong to this database, per job, read with pg_waldump: records
    naming one of its relations, and every record (commits included) of the transactions that wrote them."""
    waldump = _waldump_path()
    if waldump is None:
        return {"attributed": None, "why_not": "pg_waldump not found"}
    try:
        completed = subprocess.run([waldump, "-p", str(rig.data_directory / "pg_wal"), "-s", start, "-e", end],
                                   capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"attributed": None, "why_not": f"pg_waldump failed: {exc}"}
    records = []
    for line in completed.stdout.splitlines():
        match = WAL_RECORD.match(line)
        if match:
            rmgr, rec, tot, xid, desc = match.groups()
            databases = {int(oid) for oid in WAL_RELATION.findall(line)}
            records.append((rmgr, int(rec), int(tot), int(xid), desc, rig.database_oid in databases))
    if not records:
        return {"attributed": None, "why_not": f"pg_waldump read nothing: {completed.stderr.strip()[:300]}"}
    ours_xids = {xid for _, _, _, xid, _, ours in records if ours and xid}
    ours = [record for record in records if record[5] or (record[3] and record[3] in ours_xids)]
    total = sum(record[2] for record in ours)
    full_page = sum(record[2] - record[1] for record in ours)
    by_rmgr = Counter()
    for rmgr, _, tot, _, _, _ in ours:
        by_rmgr[rmgr] += tot
    return {
        "attributed": {
            "bytes": round(total / jobs, 1),
            "full_page_image_bytes": round(full_page / jobs, 1),
            "records": round(len(ours) / jobs, 2),
            "commits": round(sum(record[0] == "Transaction" and record[4] == "COMMIT" for record in ours) / jobs, 3),
            "bytes_by_rmgr": {rmgr: round(size / jobs, 1) for rmgr, size in by_rmgr.most_common()},
        },
        "records_read": len(records),
        "warnings": completed.stderr.strip()[:300] or None,
    }


def _waldump_path() -> str | None:
    from django.db import connection

    found = shutil.which("pg_waldump")
    if found:
        return found
    major = connection.pg_version // 10000
    candidate = Path(f"/usr/lib/postgresql/{major}/bin/pg_waldump")
    return str(candidate) if candidate.exists() else None


# --- The system under measurement ---------------------------------------------------------------


def rig_prepare(args: argparse.Namespace, env: dict[str, str]) -> Rig:
    from django.core.management import call_command
    from django.db import DatabaseError, connection, transaction

    from apps.ops.bootstrap import database_ensure_exists
    from bench import processes
    from config.broker import broker_urls

    database_ensure_exists()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    management = Management(args.management_url)
    urls = broker_urls(args.broker_url)
    vhost = unquote(urlsplit(urls[0]).path[1:]) or "/"
    created = management.vhost_ensure(vhost, unquote(urlsplit(urls[0]).username or "guest"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
        oid = cursor.fetchone()[0]
        cursor.execute("SHOW data_directory")
        data_directory = Path(cursor.fetchone()[0])
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_create_physical_replication_slot(%s, true, true)",
                           [f"{WAL_SLOT}_{os.getpid()}"])
    except DatabaseError as exc:  # not a superuser, or no slot free: a checkpoint may take the WAL first
        print(f"No replication slot ({str(exc).strip()}); WAL may be recycled before pg_waldump reads it.")
    rig = Rig(
        args=args, env=env, log_dir=ROOT / "artifacts" / "costs" / "logs", management=management, vhost=vhost,
        database_oid=oid, data_directory=data_directory,
        postgres_pids=processes.server_pids("postgres", port=int(connection.settings_dict["PORT"] or 5432)),
        rabbitmq_nodes={urlsplit(url).port or 5672: processes.server_pids("beam.smp", port=urlsplit(url).port or 5672)
                        for url in urls},
    )
    rig.vhost_created = created
    _queues_reset()
    _tables_truncate(rig)
    return rig


def _queues_reset() -> None:
    """Declare and empty Conveyor's job queues and its dead-letter queue."""
    from bench.measure import queues_reset
    from config import broker

    queues_reset([*broker.job_queues(), broker.dead_queue()])


def _tables_truncate(rig: Rig) -> None:
    from apps.jobs.models import Job, JobAttempt
    from apps.webhooks.models import WebhookAttempt

    tables = ", ".join(model._meta.db_table for model in (WebhookAttempt, JobAttempt, Job))
    rig.query(f"TRUNCATE {tables} CASCADE")


def process_start(rig: Rig, role: str, command: str, marker: str, **env: str) -> Any:
    """Start a Procfile process with its own application_name, and wait until it logs `marker`."""
    from bench import processes

    process = processes.start(f"costs-{role}", command, env={**rig.env, "PGAPPNAME": f"{APP_PREFIX}{role}", **env},
                              log_dir=rig.log_dir)
    rig.processes[role] = process
    processes.wait_ready(process, marker)
    return process


def process_stop(rig: Rig, role: str) -> None:
    rig.processes.pop(role).stop()


def _relay_start(rig: Rig, batch_size: int | None = None) -> None:
    from bench import processes

    extra = {"CONVEYOR_RELAY_BATCH_SIZE": str(batch_size)} if batch_size else {}
    process_start(rig, "relay", processes.procfile_command("relay"), "relay publishes the outbox", **extra)


def _web_start(rig: Rig) -> str:
    from bench import processes
    from bench.measure import _answers

    port = processes.free_port()
    process_start(rig, "web", processes.procfile_command("web"), "Booting worker", WEB_BIND=f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/api/jobs/"
    processes.wait_until(lambda: _answers(url), timeout=60, what="the web to answer")
    return url


def _worker_start(rig: Rig) -> None:
    from bench import processes

    process_start(rig, "worker", f"{processes.procfile_command('worker')} -- --hostname costs-default@%h", " ready.")


def _settle(rig: Rig) -> None:
    time.sleep(rig.args.settle_seconds)


# --- Measurements -----------------------------------------------------------------------------------


def relay_backlog_measure(rig: Rig, *, batch_size: int) -> dict[str, Any]:
    """The relay drains --relay-jobs due jobs, no worker running; each pass timed by the published_at it stamps."""
    from django.db import transaction
    from django.utils import timezone

    from apps.jobs.models import Job
    from bench.load import percentile
    from bench.processes import wait_until

    jobs = rig.args.relay_jobs
    _relay_start(rig, batch_size)
    _tables_truncate(rig)
    _queues_reset()
    rig.query("SELECT pg_stat_force_next_flush()")
    with transaction.atomic():
        due = timezone.now()
        for start in range(0, jobs, 10_000):
            Job.objects.bulk_create(Job(kind="diagnostics.noop", params={}, queue="default", due_at=due,
                                        status=Job.Status.QUEUED) for _ in range(start, min(jobs, start + 10_000)))
        before = meters_read(rig, starts=True, pending=pending_rows(rig))
    # The commit sends the outbox's NOTIFY: the relay wakes and drains from here.
    began = time.monotonic()
    outbox = f"SELECT EXISTS (SELECT 1 FROM {Job._meta.db_table} WHERE published_at IS NULL)"
    wait_until(lambda: not rig.query(outbox)[0][0], timeout=600, interval=POLL, what="the relay to publish the backlog")
    wall = time.monotonic() - began
    _settle(rig)
    after = meters_read(rig, starts=False)
    stamps = rig.query(f"SELECT published_at, count(*) FROM {Job._meta.db_table} GROUP BY 1 ORDER BY 1")
    queue = after.messages.get(f"queue:{rig.args.queue_prefix}default", {})
    costs = costs_per_job(rig, before, after, jobs)
    process_stop(rig, "relay")
    _tables_truncate(rig)
    _queues_reset()
    passes = len(stamps)
    # Each pass stamps its jobs' published_at when RabbitMQ has confirmed them: from one stamp to the next is
    # one whole pass (claim, publish, confirms, mark), by the relay's own clock.
    gaps = [(later[0] - earlier[0]).total_seconds() * 1000 for earlier, later in itertools.pairwise(stamps)]
    after_first = (jobs - stamps[0][1]) / (sum(gaps) / 1000) if gaps and sum(gaps) else jobs / wall
    relay_ms = costs["cpu_ms"]["relay"] + costs["cpu_ms"]["postgres_backends"].get("relay", 0)
    measured = {
        "batch_size": batch_size,
        "jobs": jobs,
        "passes": passes,
        "jobs_per_pass": {"median": statistics.median(count for _, count in stamps), "max": max(c for _, c in stamps)},
        "pass_ms": {"median": round(statistics.median(gaps), 1), "p90": round(percentile(gaps, 90), 1)}
        if gaps else None,
        # The jobs of every pass but the first, over the time from the first pass's stamp to the last one's.
        "jobs_per_second": round(after_first, 1),
        "wall_seconds": round(wall, 2),
        "wall_jobs_per_second": round(jobs / wall, 1),
        "relay_and_its_postgres_cpu_ms_per_job": round(relay_ms, 3),
        "message_bytes": round(queue.get("message_bytes", 0) / queue["messages"], 1) if queue.get("messages") else None,
        "queued_messages": queue.get("messages"),
        **costs,
    }
    print(f"  relay, batch {batch_size}: {passes} passes, {measured['jobs_per_second']:,.0f} jobs/s, "
          f"pass {measured['pass_ms'] and measured['pass_ms']['median']} ms, "
          f"relay CPU {costs['cpu_ms']['relay']} ms/job")
    return measured


def jobs_measure(rig: Rig, *, url: str, headers: dict[str, str], body: bytes, jobs: int, label: str) -> dict[str, Any]:
    """Submit `jobs` through the API at --rate, wait until all finished, and read what they cost."""
    from apps.jobs.models import Job
    from bench import load
    from bench.processes import wait_until

    _tables_truncate(rig)
    before = meters_read(rig, starts=True)
    replies = load.paced_post(url=url, body=body, headers=headers, rate=rig.args.rate, seconds=jobs / rig.args.rate,
                              connections=rig.args.connections)
    refused = [(status, answer[:200]) for status, answer, _ in replies if status != 202]
    if refused or len(replies) != jobs:
        raise RuntimeError(f"{len(replies)} answers to {jobs} submissions, refused: {refused[:3]}")
    table = Job._meta.db_table
    finished = tuple(Job.FINISHED)
    wait_until(lambda: rig.query(f"SELECT count(*) FROM {table} WHERE status IN %s", [finished])[0][0] >= jobs,
               timeout=jobs / 5 + 120, interval=POLL, what=f"{jobs} {label} jobs to finish")
    drained = time.monotonic() - before.at
    _settle(rig)
    after = meters_read(rig, starts=False)
    outcomes = dict(rig.query(f"SELECT status, count(*) FROM {table} GROUP BY 1"))
    passes = rig.query(f"SELECT count(DISTINCT published_at) FROM {table}")[0][0]
    if outcomes.get(Job.Status.SUCCEEDED) != jobs:
        raise RuntimeError(f"Expected {jobs} {label} jobs to succeed, found {outcomes}.")
    costs = costs_per_job(rig, before, after, jobs)
    costs.update(relay_passes=passes, jobs_per_relay_pass=round(jobs / passes, 2) if passes else None,
                 drain_seconds=round(drained, 2))
    cpu = costs["cpu_ms"]
    print(f"  {label}: {jobs} jobs in {drained:.1f} s; ms/job web {cpu['web']}, relay {cpu['relay']}, worker "
          f"{cpu['worker']}, postgres {cpu['postgres_backends']['all']}, rabbitmq {cpu['rabbitmq']}; "
          f"{costs['jobs_per_relay_pass']} jobs/pass")
    return costs


def rounds_median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number's median over the rounds, in the shape of one round."""
    first = rounds[0]
    if isinstance(first, dict):
        keys = [key for key in first if all(isinstance(r, dict) and key in r for r in rounds)]
        return {key: rounds_median([r[key] for r in rounds]) for key in keys}
    if isinstance(first, int | float) and not isinstance(first, bool) and all(
            isinstance(r, int | float) for r in rounds):
        return round(statistics.median(rounds), 3)
    return first


# --- Report -------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    """The per-job figures as a table: one column per measurement."""
    columns = [("end to end (no-op)", results["end_to_end"]["median"])] if results.get("end_to_end") else []
    if results.get("webhooks"):
        columns.append((f"webhooks ({results['settings']['webhook_delay_ms']} ms)", results["webhooks"]["median"]))
    columns += [(f"relay backlog, batch {r['batch_size']}", r) for r in results.get("relay_backlog", [])]

    def row(title: str, pick: Any) -> str:
        cells = []
        for _, data in columns:
            try:
                value = pick(data)
            except (KeyError, TypeError):
                value = None
            cells.append("—" if value is None else f"{value:,.3f}".rstrip("0").rstrip("."))
        return f"| {title} | " + " | ".join(cells) + " |"

    lines = ["| per job | " + " | ".join(title for title, _ in columns) + " |",
             "| --- |" + " ---: |" * len(columns)]
    for role in ("web", "relay", "worker"):
        lines.append(row(f"CPU ms, {role} process", lambda d, role=role: d["cpu_ms"].get(role)))
        lines.append(row(f"CPU ms, PostgreSQL backends of the {role}",
                         lambda d, role=role: d["cpu_ms"]["postgres_backends"].get(role)))
    lines += [
        row("CPU ms, PostgreSQL backends, all", lambda d: d["cpu_ms"]["postgres_backends"]["all"]),
        row("CPU ms, RabbitMQ", lambda d: d["cpu_ms"]["rabbitmq"]),
        row("PostgreSQL transactions committed", lambda d: d["postgres"]["xact_commit"]),
        row("PostgreSQL rows inserted", lambda d: d["postgres"]["tup_inserted"]),
        row("PostgreSQL rows updated", lambda d: d["postgres"]["tup_updated"]),
        row("WAL bytes, this database (pg_waldump)", lambda d: d["wal"]["attributed"]["bytes"]),
        row("WAL bytes of which full-page images", lambda d: d["wal"]["attributed"]["full_page_image_bytes"]),
        row("WAL commit records", lambda d: d["wal"]["attributed"]["commits"]),
        row("WAL bytes, LSN moved (all databases)", lambda d: d["wal"]["lsn_bytes_all_databases"]),
        row("RabbitMQ messages published (vhost)", lambda d: d["rabbitmq"]["vhost"]["publish"]),
        row("RabbitMQ publishes confirmed", lambda d: d["rabbitmq"]["vhost"]["confirm"]),
        row("RabbitMQ messages delivered", lambda d: d["rabbitmq"]["vhost"]["deliver"]),
        row("RabbitMQ messages acknowledged", lambda d: d["rabbitmq"]["vhost"]["ack"]),
        row("of them task events (celeryev) published", lambda d: d["rabbitmq"]["events"]["publish"]),
        row("jobs per relay pass", lambda d: d.get("jobs_per_relay_pass") or d["jobs_per_pass"]["median"]),
    ]
    machine = results["machine"]
    lines += ["", f"Measured {results['started_at'][:16].replace('T', ' ')} UTC by `python -m bench.costs` on "
              f"{machine['cores']} cores ({machine['cpu']}), PostgreSQL {machine['postgresql']}, RabbitMQ "
              f"{machine['rabbitmq']}; load average {results['load_average']['start']} at the start, "
              f"{results['load_average']['end']} at the end."]
    if results.get("end_to_end"):
        lines.append(f"End-to-end figures are medians of {results['settings']['rounds']} rounds of "
                     f"{results['settings']['jobs']} jobs submitted at {results['settings']['rate']:g}/s.")
    for relay in results.get("relay_backlog", []):
        lines.append(f"Relay, batch {relay['batch_size']}: {relay['jobs']:,} jobs in {relay['passes']} passes, "
                     f"median pass {relay['pass_ms'] and relay['pass_ms']['median']} ms, "
                     f"{relay['jobs_per_second']:,} jobs/s; message {relay['message_bytes']} bytes.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from bench.run import conveyor_env

    args = parse_args(argv)
    env = conveyor_env(argparse.Namespace(large=False, backlog_jobs=0, backlog_retrying=0,
                                          database_url=args.database_url, broker_url=args.broker_url,
                                          queue_prefix=args.queue_prefix))
    env["CONVEYOR_QUEUE_MAX_LENGTH"] = str(max(100_000, args.relay_jobs + 1000))
    os.environ.update({**env, "PGAPPNAME": f"{APP_PREFIX}harness"})
    django.setup()
    return costs_run(args, env)


def costs_run(args: argparse.Namespace, env: dict[str, str]) -> int:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from apps.jobs.services import api_token_create
    from apps.webhooks.models import WebhookEndpoint
    from bench import report
    from bench.measure import NOOP_BODY, _postgres_version, _rabbitmq_version, _receiver_start

    started_at = datetime.now(UTC)
    print(f"Costs: database {connection.settings_dict['NAME']}, RabbitMQ vhost of {args.broker_url.split(';')[0]}")
    rig = rig_prepare(args, env)
    machine = report.machine_describe(postgres=_postgres_version(), rabbitmq=_rabbitmq_version(),
                                      load_generator="Python threads (bench.load.paced_post)")
    token, _ = api_token_create(username="costs")
    headers = {"Authorization": f"Bearer {token}"}
    results: dict[str, Any] = {"started_at": started_at.isoformat(), "machine": machine,
                               "settings": {key: str(value) if isinstance(value, Path) else value
                                            for key, value in vars(args).items()},
                               "load_average": {"start": round(os.getloadavg()[0], 2)}}
    try:
        url = _web_start(rig)
        if "relay" in args.measurements:
            print(f"Relay backlog: {args.relay_jobs:,} jobs, batch sizes {args.batch_sizes}")
            results["relay_backlog"] = [relay_backlog_measure(rig, batch_size=size) for size in args.batch_sizes
                                        for _ in range(args.relay_rounds)]
        _relay_start(rig)
        _worker_start(rig)
        jobs_measure(rig, url=url, headers=headers, body=NOOP_BODY, jobs=min(100, args.jobs), label="warm-up")
        if "end-to-end" in args.measurements:
            print(f"End to end: {args.rounds} rounds of {args.jobs} no-op jobs at {args.rate:g}/s")
            rounds = [jobs_measure(rig, url=url, headers=headers, body=NOOP_BODY, jobs=args.jobs, label="no-op")
                      for _ in range(args.rounds)]
            results["end_to_end"] = {"median": rounds_median(rounds), "rounds": rounds}
        if args.webhook_jobs and "webhooks" in args.measurements:
            receiver_url = _receiver_start(env=env, log_dir=rig.log_dir, started=rig.helpers)
            owner = get_user_model().objects.get(username="costs")
            WebhookEndpoint.objects.filter(owner=owner).delete()
            endpoint = WebhookEndpoint.objects.create(owner=owner, url=f"{receiver_url}/hook/{args.webhook_delay_ms}",
                                                      description="bench.costs receiver")
            body = json.dumps({"kind": "webhooks.deliver", "params": {
                "endpoint": endpoint.id, "event": "bench.costs", "payload": {"n": 1}}}).encode()
            print(f"Webhooks: {args.webhook_jobs} deliveries answered after {args.webhook_delay_ms} ms")
            measured = jobs_measure(rig, url=url, headers=headers, body=body, jobs=args.webhook_jobs, label="webhook")
            results["webhooks"] = {"median": measured, "rounds": [measured]}
    finally:
        for role in list(rig.processes):
            process_stop(rig, role)
        for helper in rig.helpers:
            helper.stop()
        _queues_reset()
        if getattr(rig, "vhost_created", False):
            rig.management.call("DELETE", f"vhosts/{quote(rig.vhost, safe='')}")
    results["load_average"]["end"] = round(os.getloadavg()[0], 2)
    results["finished_at"] = datetime.now(UTC).isoformat()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "costs.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(results)
    (args.output / "costs.md").write_text(table)
    print(f"\n{table}\nWrote {args.output / 'costs.json'} and {args.output / 'costs.md'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
