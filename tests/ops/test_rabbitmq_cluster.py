"""`make cluster`'s script starts three real RabbitMQ nodes that replicate Conveyor's queues, and stops only them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from kombu import Connection

from config import broker
from config.celery import app as celery_app
from scripts.rabbitmq_cluster import Cluster
from tests.processes import port_free, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]


def _script(cluster: Cluster, action: str) -> subprocess.CompletedProcess:
    """The cluster script as `make cluster` runs it, on this test's own node names, ports and directory."""
    first = cluster.nodes[0]
    command = [sys.executable, "-m", "scripts.rabbitmq_cluster", action, "--name", cluster.name,
               "--dir", str(first.directory.parent), "--amqp-port", str(first.amqp_port),
               "--management-port", str(first.management_port), "--dist-port", str(first.dist_port)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)


def _api(node, path: str):
    response = requests.get(f"http://127.0.0.1:{node.management_port}/api/{path}", auth=("guest", "guest"), timeout=5)
    response.raise_for_status()
    return response.json()


def _queue(node, name: str) -> dict | None:
    response = requests.get(f"http://127.0.0.1:{node.management_port}/api/queues/%2F/{name}", auth=("guest", "guest"),
                            timeout=5)
    return None if response.status_code == 404 else response.json()


def _pids(cluster: Cluster) -> list[int]:
    return [int(node.pid_file.read_text()) for node in cluster.nodes]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_cluster_starts_three_nodes_that_replicate_queues_is_idempotent_and_stops_only_itself(own_cluster):
    names = sorted(node.name for node in own_cluster.nodes)

    # Given nothing running, when the script starts the cluster
    started = _script(own_cluster, "start")

    # then three nodes run as one cluster, each with its management API, and the output says how to use them
    assert started.returncode == 0, started.stdout + started.stderr
    for node in own_cluster.nodes:
        assert _api(node, "overview")["node"] == node.name
        assert sorted(entry["name"] for entry in _api(node, "nodes") if entry["running"]) == names
    assert all(name in started.stdout for name in names)
    assert f"CELERY_BROKER_URL='{';'.join(node.broker_url for node in own_cluster.nodes)}'" in started.stdout

    # and Conveyor's job queues and dead queue, declared through the second node, have members on all three
    with Connection(own_cluster.nodes[1].broker_url) as connection:
        broker.topology_declare(connection)
    queue_names = [broker.dead_queue().name, *(queue.name for queue in broker.job_queues())]
    for name in queue_names:
        queue = wait_until(lambda name=name: _queue(own_cluster.nodes[2], name), timeout=30,
                           what=f"{name} to be listed")
        assert queue["type"] == "quorum", name
        assert sorted(queue["members"]) == names, name

    # When it is run a second time, it starts nothing and the same node processes keep running
    pids = _pids(own_cluster)
    again = _script(own_cluster, "start")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing was started" in again.stdout
    assert _pids(own_cluster) == pids and all(map(_pid_alive, pids))

    # When one node stops, starting again boots that node alone and it rejoins the other two
    second = own_cluster.nodes[1]
    subprocess.run(["rabbitmqctl", "-q", "-n", second.name, "stop", str(second.pid_file)], check=True, timeout=120)
    restarted = _script(own_cluster, "start")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert f"Started {second.name}." in restarted.stdout
    assert sorted(entry["name"] for entry in _api(second, "nodes") if entry["running"]) == names
    new_pids = _pids(own_cluster)
    assert new_pids[0] == pids[0] and new_pids[2] == pids[2] and new_pids[1] != pids[1]
    pids = new_pids

    # When it stops the cluster, its three nodes are gone and the machine's default node still answers
    stopped = _script(own_cluster, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not any(map(_pid_alive, pids))
    assert all(port_free(node.amqp_port) for node in own_cluster.nodes)
    with celery_app.connection_for_read(connect_timeout=5) as default_node:
        default_node.connect()
        assert default_node.connected
