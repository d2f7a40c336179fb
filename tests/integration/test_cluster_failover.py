"""Failover on a three-node RabbitMQ cluster: webhook jobs submitted through the API while the node leading the
default queue is stopped and later started again, and the publishing relay is SIGKILLed. Every job must end
succeeded, none run twice at once, and no submission get a 5xx; the test prints how long the system took to resume
and writes its counts to artifacts/failover.json.

Two relays and two workers run as `make run` runs them, their CELERY_BROKER_URL the cluster's three nodes separated
by `;` (kombu's failover: each connection tries the nodes in turn). The jobs are webhooks to a loopback receiver
rather than no-ops: the default queue's real work (a network wait in the worker's threads), and a witness outside
Conveyor's own rows, which counts each event's deliveries and sees two of them at the same time; it refuses a few,
so retries are published across the failover too.

`make test-cluster` runs it (marker `cluster`: 75-85 s here, of which the cluster's start 25 s and its stop 13 s;
README, Tests) with `--failover-jobs` 300; the issue's own size is `pytest -m cluster --failover-jobs 3000`.
"""
import json
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime
from itertools import pairwise

import pytest
import requests
from django.db import connection
from django.utils import timezone
from kombu import Connection

from apps.jobs.models import Job, JobAttempt
from apps.webhooks.models import WebhookEndpoint
from config import broker
from config.celery import app as celery_app
from scripts.rabbitmq_cluster import Cluster, Node, cluster_start
from tests.processes import ROOT, Process, jobs_run_twice_at_once, relay_start, wait_until, worker_start

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

# Short backoffs, so a refused delivery is retried within the test; the relays at the default interval (the tests'
# relay_start passes 0.5 s), as a deployment runs them.
FAST = {
    "CONVEYOR_WEBHOOK_BACKOFF_BASE": "0.2",
    "CONVEYOR_WEBHOOK_BACKOFF_CAP": "1",
    "CONVEYOR_WEBHOOK_READ_TIMEOUT": "2",
    "CONVEYOR_WEBHOOK_MAX_RETRIES": "10",
    "CONVEYOR_RELAY_INTERVAL_SECONDS": "1",
}
# The leader's node stays stopped at least this long.
NODE_DOWN_SECONDS = 10
# Submissions are paced at this many a second, and over at least SUBMIT_SECONDS.
SUBMIT_RATE = 50
SUBMIT_SECONDS = 30
PUBLISHING = "this relay publishes the outbox"
STANDING_BY = "another relay is publishing; this one stands by"


def queue_state(cluster: Cluster, *, besides: Node | None = None) -> dict | None:
    """The default queue as a running node's management API shows it (members, leader, online); None if no node
    lists it."""
    for node in cluster.nodes:
        if node is besides:
            continue
        try:
            response = requests.get(f"http://127.0.0.1:{node.management_port}/api/queues/%2F/"
                                    f"{broker.queue_name('default')}", auth=("guest", "guest"), timeout=5)
            response.raise_for_status()
        except requests.RequestException:
            continue
        return response.json()
    return None


@pytest.fixture
def cluster(own_cluster: Cluster) -> Cluster:
    """The test's own three nodes, running, with Conveyor's queues declared (a member on each node)."""
    cluster_start(own_cluster)
    with Connection(own_cluster.broker_url) as link:
        broker.topology_declare(link)
    return own_cluster


def test_every_job_succeeds_once_at_a_time_while_the_queue_leader_stops_and_a_relay_is_killed(
        request, cluster, transactional_db, user, api_client, counting_receiver):
    total = request.config.getoption("--failover-jobs")
    url, seen = counting_receiver
    endpoint = WebhookEndpoint.objects.create(owner=user, url=url)
    names = sorted(node.name for node in cluster.nodes)
    state = wait_until(lambda: queue_state(cluster), timeout=30, what="the default queue to be listed")
    assert sorted(state["members"]) == names, "the default queue is replicated on all three nodes"
    leader = next(node for node in cluster.nodes if node.name == state["leader"])

    # Half the processes list the nodes from the second one on (each host its nearest node first, say), so that the
    # leader's stop cuts some connections and moves the queue's leader away from others that stay up.
    urls = [node.broker_url for node in cluster.nodes]
    env = {"CELERY_BROKER_URL": cluster.broker_url, "FLOWER_BROKER_API": cluster.nodes[0].management_api, **FAST}
    rotated = {**env, "CELERY_BROKER_URL": ";".join(urls[1:] + urls[:1])}
    processes: list[Process] = []
    statuses: list[int] = []
    ids: list[str] = []
    moments: dict[str, datetime] = {}
    figures: dict[str, float] = {}
    submitter: threading.Thread | None = None
    try:
        # given two relays, the first publishing and the second standing by, and two workers, all on the cluster
        assert leader is cluster.nodes[0], "the queues were declared through the first node, which leads them"
        publishing = relay_start(**rotated)
        processes.append(publishing)
        wait_until(lambda: PUBLISHING in publishing.output(), timeout=60, what="the first relay to publish")
        standby = relay_start(**env)
        processes.append(standby)
        processes += [worker_start(concurrency=8, ready=False, **options) for options in (env, rotated)]
        for process in processes[2:]:
            wait_until(lambda process=process: " ready." in process.output(), timeout=90,
                       what=f"{process.name} to consume")
        assert STANDING_BY in standby.output()

        def submit() -> None:
            # The API as a client uses it, paced; each answer's status is kept.
            pause = max(SUBMIT_SECONDS, total / SUBMIT_RATE) / total
            try:
                for index in range(total):
                    if abandoned.is_set():
                        return
                    response = api_client.post(
                        "/api/jobs/", {"kind": "webhooks.deliver", "params": {
                            "endpoint": endpoint.id, "event": "order.paid", "payload": {"n": index}}},
                        content_type="application/json",
                    )
                    statuses.append(response.status_code)
                    if response.status_code == 202:
                        ids.append(response.json()["id"])
                    time.sleep(pause)
            finally:
                connection.close()

        began = time.monotonic()
        abandoned = threading.Event()
        submitter = threading.Thread(target=submit)
        submitter.start()
        try:
            # when the node leading the default queue stops a fifth of the way through the submissions
            wait_until(lambda: len(statuses) >= total // 5, timeout=300, what="a fifth of the submissions")
            moments["node_stopped"] = timezone.now()
            stopped_at = time.monotonic()
            subprocess.run(["rabbitmqctl", "-q", "-n", leader.name, "stop", str(leader.pid_file)], check=True,
                           capture_output=True, timeout=120)
            figures["node_stop_command_seconds"] = time.monotonic() - stopped_at
            # then another node leads the queue (the management API says so some seconds late: it publishes its
            # figures every 5 s), and readiness still answers, naming the node that is down
            new_leader = wait_until(lambda: _leader_other_than(cluster, leader), timeout=60, interval=0.2,
                                    what="a new leader of the default queue")
            ready = _readyz(cluster)
            # and when the publishing relay is SIGKILLed at two fifths, the standby takes over
            wait_until(lambda: len(statuses) >= 2 * total // 5, timeout=300, what="two fifths of the submissions")
            moments["relay_killed"] = timezone.now()
            publishing.kill()
            # and the stopped node starts again halfway, after at least NODE_DOWN_SECONDS, and rejoins under load
            wait_until(lambda: len(statuses) >= total // 2 and time.monotonic() - stopped_at >= NODE_DOWN_SECONDS,
                       timeout=300, what="half of the submissions")
        finally:
            moments["node_starting"] = timezone.now()
            cluster_start(cluster)
        figures["node_down_seconds"] = time.monotonic() - stopped_at
        submitter.join(timeout=600)
        wait_until(lambda: Job.objects.filter(status=Job.Status.SUCCEEDED).count() == total,
                   timeout=120 + total / 10, interval=0.5, what="every job to succeed")
        figures["seconds"] = time.monotonic() - began
    finally:
        if submitter is not None:
            abandoned.set()  # a failure cut the test short: no more submissions into a database being emptied
            submitter.join(timeout=60)
        for process in processes:
            process.kill()

    jobs = Job.objects.filter(kind="webhooks.deliver")
    attempts = JobAttempt.objects.filter(job__in=jobs)
    counts = {
        "jobs": total,
        "submissions_answered": dict(Counter(statuses)),
        "succeeded": jobs.filter(status=Job.Status.SUCCEEDED).count(),
        "attempts": dict(Counter(attempts.values_list("outcome", flat=True))),
        "jobs_run_twice_at_once": len(jobs_run_twice_at_once(jobs)),
        "deliveries": sum(seen.received.values()),
        "events_delivered_twice_or_more": sum(1 for count in seen.received.values() if count > 1),
        "events_delivered_at_the_same_time": len(seen.overlapping),
        "answered_503": seen.refused,
        "dispatches_beyond_one_per_attempt": sum(jobs.values_list("generation", flat=True)) - attempts.count(),
        "messages_dropped_by_the_fence": sum(process.output().count("dropped:") for process in processes[2:]),
        "leader_stopped": leader.name,
        "leader_elected": new_leader,
        "readyz_while_node_down": ready,
        **{name: round(value, 1) for name, value in figures.items()},
        **_resumption(jobs, moments),
    }
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "failover.json").write_text(json.dumps(counts, indent=2))
    print(f"\nFailover: {json.dumps(counts)}")
    assert not [status for status in statuses if status >= 500], Counter(statuses)
    assert statuses == [202] * total, Counter(statuses)
    assert counts["succeeded"] == total
    assert set(seen.received) == set(ids), "every event is delivered at least once"
    assert not seen.overlapping, f"events delivered twice at the same time: {sorted(seen.overlapping)[:5]}"
    assert counts["jobs_run_twice_at_once"] == 0
    assert ready["status"] == 200 and ready["broker_nodes"][f"127.0.0.1:{leader.amqp_port}"].startswith("unavailable")
    assert STANDING_BY in standby.output() and PUBLISHING in standby.output()
    wait_until(lambda: sorted(queue_state(cluster).get("online", [])) == names, timeout=60,
               what="the restarted node to be an online member of the queue again")


def _leader_other_than(cluster: Cluster, node: Node) -> str | None:
    leader = (queue_state(cluster, besides=node) or {}).get("leader")
    return leader if leader not in (None, node.name) else None


def _readyz(cluster: Cluster) -> dict:
    """GET /readyz of a web process pointed at the cluster: its status and its answer."""
    from django.test import Client

    original = celery_app.conf.broker_url
    celery_app.conf.broker_url = cluster.broker_url
    try:
        response = Client().get("/readyz")
    finally:
        celery_app.conf.broker_url = original
    return {"status": response.status_code, **response.json()}


def _resumption(jobs, moments: dict[str, datetime]) -> dict[str, float]:
    """How long the system took to resume after each event: the longest time in which no attempt finished, from the
    event to the next one (the node's stop to the relay's kill, the kill to the node's start, its start to the last
    submission), and when that pause ended, in seconds after the event; the first publish after the kill; and, to
    compare, the median time between two attempts' ends over the run."""
    finished = sorted(JobAttempt.objects.filter(job__in=jobs).values_list("finished_at", flat=True))
    moments = {**moments, "submitted": jobs.order_by("created_at").last().created_at}
    figures = {}
    for event, start, end in (("node_stop", "node_stopped", "relay_killed"), ("relay_kill", "relay_killed",
                              "node_starting"), ("node_start", "node_starting", "submitted")):
        start, end = moments[start], moments[end]
        points = [start, *(at for at in finished if start < at < end)]
        after = next(at for at in finished if at >= end)  # the last job submitted finishes after its submission
        longest, resumed = max((b - a, b) for a, b in pairwise([*points, after]))
        figures[f"pause_after_{event}_seconds"] = round(longest.total_seconds(), 2)
        figures[f"resumed_after_{event}_seconds"] = round((resumed - start).total_seconds(), 2)
    published = jobs.filter(created_at__gt=moments["relay_killed"]).order_by("published_at").values_list(
        "published_at", flat=True).first()
    figures["first_publish_after_relay_kill_seconds"] = round((published - moments["relay_killed"]).total_seconds(), 2)
    gaps = sorted((b - a).total_seconds() for a, b in pairwise(finished))
    figures["median_seconds_between_attempts"] = round(gaps[len(gaps) // 2], 3)
    return figures
