"""`python -m bench.delays`: how late a delayed message reaches its queue, the two ways a retry's backoff can wait.

- Conveyor's way: the job waits as a row of the outbox, due at `due_at`; the relay publishes it when it falls
  due (apps/jobs/relay.py).
- RabbitMQ's way (Celery's native delayed delivery on quorum queues, which Conveyor used before): the message is
  published at once into a chain of TTL queues, one per bit of the delay in seconds, and dead-lettered from one
  to the next until it reaches the job queue.

Each side sends --messages messages due --delay to --delay + --spread seconds ahead, in whole seconds (the delay
queues' resolution); the harness consumes the queue they arrive in and records how late each arrived, and the CPU
seconds RabbitMQ, PostgreSQL and the relay used meanwhile. Runs on the benchmark's database and its own queues;
prints a table.
"""
import argparse
import os
import statistics
import sys
import time
import uuid
from argparse import Namespace
from pathlib import Path
from urllib.parse import urlsplit

import django

from bench.processes import Process

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.delays", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per side (default 1000)")
    parser.add_argument("--delay", type=float, default=5.0, help="least delay, seconds (default 5)")
    parser.add_argument("--spread", type=float, default=5.0, help="delays spread over this many more seconds")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/conveyor_bench")
    parser.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--queue-prefix", default="bench-delays-")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench.run import conveyor_env

    env = conveyor_env(Namespace(large=False, backlog_jobs=0, backlog_retrying=0, database_url=args.database_url,
                                 broker_url=args.broker_url, queue_prefix=args.queue_prefix))
    os.environ.update(env)
    django.setup()
    from django.core.management import call_command

    from apps.ops.bootstrap import database_ensure_exists

    database_ensure_exists()
    call_command("migrate", verbosity=0)
    outbox = _outbox_side(args, env)
    native = _native_side(args)
    print(f"{args.messages} messages due {args.delay:g} to {args.delay + args.spread:g} s ahead, per side")
    print("| way | late p50 ms | late p99 ms | late max ms | CPU s per 1,000: RabbitMQ | PostgreSQL | relay |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, side in (("outbox row, published when due", outbox), ("RabbitMQ delay queues", native)):
        late = sorted(side["late_ms"])
        per = 1000 / args.messages
        cpu = " | ".join(f"{side[part] * per:.2f}" for part in ("rabbitmq_cpu", "postgres_cpu", "relay_cpu"))
        print(f"| {name} | {statistics.median(late):.0f} | {late[int(0.99 * (len(late) - 1))]:.0f} | {late[-1]:.0f} "
              f"| {cpu} |")
    return 0


def _cpu(relay: "Process | None" = None) -> dict[str, float]:
    """CPU seconds so far of the servers the benchmark uses (by their ports) and of the relay, if any."""
    from django.conf import settings

    from bench import processes

    database = settings.DATABASES["default"]
    roots = {
        "rabbitmq": processes.server_pids("beam.smp", port=urlsplit(settings.CELERY_BROKER_URL).port or 5672),
        "postgres": processes.server_pids("postgres", port=int(database.get("PORT") or 5432)),
        "relay": [relay.popen.pid] if relay is not None else [],
    }
    return processes.cpu_seconds(roots)


def _delay(args: Namespace, index: int) -> int:
    return round(args.delay + args.spread * index / args.messages)


def _arrivals(connection, queue) -> dict[str, float]:
    """A consumer of `queue` with room for every message, so each is timed as it arrives: job id -> arrival time."""
    arrived: dict[str, float] = {}

    def on_message(body, message) -> None:
        arrived[message.headers["id"]] = time.time()

    consumer = connection.Consumer([queue], callbacks=[on_message], no_ack=True, prefetch_count=0)
    consumer.consume()
    return arrived


def _late(connection, arrived: dict[str, float], expected: dict[str, float], deadline: float) -> list[float]:
    """Wait until every one of `expected` (job id -> due, on the wall clock) arrived; how late each was, in ms."""
    while len(arrived) < len(expected) and time.time() < deadline:
        try:
            connection.drain_events(timeout=1)
        except TimeoutError:
            pass
    missing = set(expected) - set(arrived)
    if missing:
        raise RuntimeError(f"{len(missing)} messages never arrived")
    return [(arrived[job_id] - due) * 1000 for job_id, due in expected.items()]


def _outbox_side(args: Namespace, env: dict[str, str]) -> dict:
    from datetime import timedelta

    from django.utils import timezone

    from apps.jobs import lifecycle
    from apps.jobs.models import Job
    from bench import processes
    from config import broker
    from config.celery import app

    Job.objects.all().delete()
    with app.connection_for_write() as connection:
        queue = broker.job_queue("default")(connection.default_channel)
        queue.declare()
        queue.purge()
        relay = processes.start("delays-relay", processes.procfile_command("relay"), env=env,
                                log_dir=ROOT / "artifacts" / "bench" / "delays")
        processes.wait_ready(relay, "outbox relay started")
        try:
            arrived = _arrivals(connection, queue)
            expected = {}
            before = _cpu(relay)
            for index in range(args.messages):
                # Due `delay` after it is written, as a retry is due its backoff after its attempt ended.
                due = timezone.now() + timedelta(seconds=_delay(args, index))
                job = Job(kind="diagnostics.noop", queue="default", due_at=due)
                lifecycle.job_record(job=job)
                expected[str(job.id)] = due.timestamp()
            late = _late(connection, arrived, expected, deadline=time.time() + args.delay + args.spread + 60)
            used = {role: seconds - before[role] for role, seconds in _cpu(relay).items()}
        finally:
            relay.stop()
    Job.objects.all().delete()
    return {"late_ms": late, **{f"{role}_cpu": seconds for role, seconds in used.items()}}


def _native_side(args: Namespace) -> dict:
    from kombu import Exchange, Producer, Queue
    from kombu.transport.native_delayed_delivery import (
        bind_queue_to_native_delayed_delivery_exchange,
        calculate_routing_key,
        declare_native_delayed_delivery_exchanges_and_queues,
    )

    from config.celery import app

    prefix = args.queue_prefix.rstrip("-")
    exchange = Exchange(f"{args.queue_prefix}native", type="topic", durable=True)
    target = Queue(f"{args.queue_prefix}native", exchange=exchange, routing_key=f"{args.queue_prefix}native",
                   queue_arguments={"x-queue-type": "quorum"})
    with app.connection_for_write() as connection:
        declare_native_delayed_delivery_exchanges_and_queues(connection, "quorum", prefix)
        queue = target(connection.default_channel)
        queue.declare()
        queue.purge()
        bind_queue_to_native_delayed_delivery_exchange(connection, target, prefix)
        producer = Producer(connection.channel())
        arrived = _arrivals(connection, queue)
        expected = {}
        before = _cpu()
        for index in range(args.messages):
            delay = _delay(args, index)
            job_id = str(uuid.uuid4())
            expected[job_id] = time.time() + delay
            # The delay is the bits of the routing key, as Celery sends a countdown.
            producer.publish({}, exchange=f"{prefix}_celery_delayed_27", headers={"id": job_id},
                             routing_key=calculate_routing_key(delay, target.routing_key))
        late = _late(connection, arrived, expected, deadline=time.time() + args.delay + args.spread + 60)
        used = {role: seconds - before[role] for role, seconds in _cpu().items()}
        queue.delete()
    return {"late_ms": late, **{f"{role}_cpu": seconds for role, seconds in used.items()}}


if __name__ == "__main__":
    sys.exit(main())
