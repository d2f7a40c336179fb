"""Chaos: webhook jobs submitted through the API while workers are SIGKILLed over and over (a thread-pool worker,
as the default queue runs, killed whole and started again; and a prefork worker's pool processes), RabbitMQ is
stopped and started, and PostgreSQL is restarted; every job must end succeeded, every event be delivered at least
once and never twice at the same time, and no submission get a 5xx.

The suite runs a small size (`--chaos-jobs`, default 200); `pytest tests/integration/test_chaos.py --chaos-jobs
1500` runs the size of the issue's own try. The counts are printed and written to artifacts/chaos.json.
"""
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from apps.jobs.models import Job, JobAttempt
from apps.webhooks.models import WebhookEndpoint
from tests.processes import ROOT, Process, postgresql_start, postgresql_stop, rabbitmqctl, relay_start, wait_until

pytestmark = pytest.mark.integration

# A prefork pool process is SIGKILLed this often, and the thread-pool worker every KILLS_PER_WORKER_KILL times
# that, while the jobs are submitted and run.
KILL_EVERY_SECONDS = 1.5
KILLS_PER_WORKER_KILL = 3
# RabbitMQ stays stopped at least this long.
RABBITMQ_DOWN_SECONDS = 8
# Short limits and retries, so a lost job is found and a refused one retried within the test.
FAST = {
    "CONVEYOR_WEBHOOK_BACKOFF_BASE": "0.2",
    "CONVEYOR_WEBHOOK_BACKOFF_CAP": "1",
    "CONVEYOR_WEBHOOK_READ_TIMEOUT": "2",
    "CONVEYOR_WEBHOOK_MAX_RETRIES": "10",
    "CONVEYOR_TASK_SOFT_TIME_LIMIT": "8",
    "CONVEYOR_TASK_TIME_LIMIT": "10",
    "CONVEYOR_RECONCILE_INTERVAL_SECONDS": "2",
    "CONVEYOR_RECONCILE_AFTER_SECONDS": "5",
}


def pool_processes(worker: Process) -> list[int]:
    children = Path(f"/proc/{worker.popen.pid}/task/{worker.popen.pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def test_every_job_succeeds_once_at_a_time_through_kills_and_both_outages(request, relay, start_worker, user,
                                                                         api_client, counting_receiver):
    total = request.config.getoption("--chaos-jobs")
    url, seen = counting_receiver
    relay.stop()
    lifeline = relay_start(**FAST)
    threads = start_worker(concurrency=8, **FAST)
    prefork = start_worker(CONVEYOR_QUEUE_POOLS="default=prefork", **FAST)
    endpoint = WebhookEndpoint.objects.create(owner=user, url=url)
    statuses: list[int] = []
    ids: list[str] = []
    stop_killing = threading.Event()
    kills = 0

    def submit() -> None:
        # The API as a client uses it, paced over about 20 s; each answer's status is kept.
        try:
            for index in range(total):
                response = api_client.post(
                    "/api/jobs/", {"kind": "webhooks.deliver",
                                   "params": {"endpoint": endpoint.id, "event": "order.paid", "payload": {"n": index}}},
                    content_type="application/json",
                )
                statuses.append(response.status_code)
                if response.status_code == 202:
                    ids.append(response.json()["id"])
                time.sleep(20 / total)
        finally:
            connection.close()

    def kill() -> None:
        nonlocal kills, threads
        chance = random.Random(11)
        while not stop_killing.wait(KILL_EVERY_SECONDS):
            pids = pool_processes(prefork)
            if pids:
                try:
                    os.kill(chance.choice(pids), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:  # it ended on its own meanwhile
                    pass
            if kills % KILLS_PER_WORKER_KILL == 0:
                threads.kill()  # the whole thread-pool worker, as a crash or an out-of-memory kill would
                kills += 1
                threads = start_worker(concurrency=8, **FAST)  # as its supervisor would

    began = time.monotonic()
    submitter, killer = threading.Thread(target=submit), threading.Thread(target=kill)
    submitter.start()
    killer.start()
    try:
        # RabbitMQ goes away a quarter of the way through the submissions and comes back halfway, after at
        # least RABBITMQ_DOWN_SECONDS; PostgreSQL restarts at three quarters.
        wait_until(lambda: len(statuses) >= total // 4, timeout=120, what="a quarter of the submissions")
        rabbitmqctl("stop_app")
        rabbitmq_down = time.monotonic()
        try:
            back_at = rabbitmq_down + RABBITMQ_DOWN_SECONDS
            wait_until(lambda: len(statuses) >= total // 2 and time.monotonic() >= back_at, timeout=120,
                       what="half of the submissions")
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        rabbitmq_down = time.monotonic() - rabbitmq_down
        wait_until(lambda: len(statuses) >= 3 * total // 4, timeout=120, what="three quarters of the submissions")
        postgresql_stop()
        postgresql_start()
        submitter.join(timeout=300)
        wait_until(lambda: Job.objects.filter(status="succeeded").count() == total, timeout=240, interval=0.5,
                   what="every job to succeed")
    finally:
        stop_killing.set()
        killer.join()
        lifeline.stop()
    elapsed = time.monotonic() - began

    jobs = Job.objects.filter(kind="webhooks.deliver")
    counts = {
        "jobs": total,
        "submissions_answered": dict(Counter(statuses)),
        "succeeded": jobs.filter(status="succeeded").count(),
        "deliveries": sum(seen.received.values()),
        "events_delivered_twice_or_more": sum(1 for count in seen.received.values() if count > 1),
        "events_delivered_at_the_same_time": len(seen.overlapping),
        "answered_503": seen.refused,
        "processes_killed": kills,
        "attempts": dict(Counter(JobAttempt.objects.filter(job__in=jobs).values_list("outcome", flat=True))),
        "rabbitmq_down_seconds": round(rabbitmq_down, 1),
        "postgresql_restarts": 1,
        "seconds": round(elapsed, 1),
    }
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "chaos.json").write_text(json.dumps(counts, indent=2))
    print(f"\nChaos: {json.dumps(counts)}")
    assert statuses == [202] * total, Counter(statuses)
    assert counts["succeeded"] == total
    assert set(seen.received) == set(ids), "every event is delivered at least once"
    assert not seen.overlapping, f"events delivered twice at the same time: {sorted(seen.overlapping)[:5]}"
    assert kills > 0 and prefork.popen.poll() is None
