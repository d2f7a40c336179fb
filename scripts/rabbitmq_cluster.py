"""A three-node RabbitMQ cluster on this one machine, so Conveyor runs and is tested on more than one broker.

`make cluster` runs `python -m scripts.rabbitmq_cluster start`, `make cluster-stop` runs `stop`:

    node                   AMQP   management   distribution   files
    conveyor-1@localhost   5681   15681        25681          var/cluster/conveyor-1/
    conveyor-2@localhost   5682   15682        25682          var/cluster/conveyor-2/
    conveyor-3@localhost   5683   15683        25683          var/cluster/conveyor-3/

Each node is a Debian `rabbitmq-server` of its own beside the machine's default node (rabbit@localhost on
5672), which this script never starts, stops or reconfigures. A node's directory holds all it reads and
writes: `rabbitmq-env.conf` (its name, ports and paths; `RABBITMQ_CONF_ENV_FILE=<that file> rabbitmq-server
-detached` starts it by hand), `rabbitmq.conf`, `enabled_plugins` (the management plugin, whose API gives
the admin dashboard and Flower their queue depths), `data/`, `log/` and its pid file. Every port listens on
127.0.0.1 only. Nodes run as the `rabbitmq` user through Debian's scripts, so they share the machine's
Erlang cookie (/var/lib/rabbitmq/.erlang.cookie) and `rabbitmqctl -n conveyor-2@localhost ...` reaches
them; that is why the script runs as root (or as rabbitmq).

The nodes find each other by RabbitMQ's classic peer discovery, the configuration the compose file's
`cluster` profile uses: a new node joins a running peer, so the first node of a new cluster boots alone
and the others start once it runs. Nodes that already belong to the cluster start together, since each
waits at boot for the peers it last saw. Running `start` again starts only the nodes that are not running
(none, when all three are); `stop` stops these three nodes and nothing else.

Replication. A quorum queue declared without `x-quorum-initial-group-size` gets a member on every node of
the cluster, running or not: on RabbitMQ 3.10 here, a queue declared with one node stopped still lists all
three members. So Conveyor's job queues and dead queue, declared by its workers and relay once the cluster
exists, are replicated on all three nodes with no queue argument and no policy. A queue declared before a
node joined lacks that node (Conveyor pointed at the first node alone, say), so `start` ends with
`rabbitmq-queues grow <node> all` for each node, which adds the missing members and changes nothing else.
"""
import argparse
import json
import os
import pwd
import socket
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
# The cluster of `make cluster`; the test suite starts its own beside it with other names and ports.
NAME = "conveyor"
DIRECTORY = ROOT / "var" / "cluster"
AMQP_PORT, MANAGEMENT_PORT, DIST_PORT = 5681, 15681, 25681
RABBITMQ_USER = "rabbitmq"
# A node boots in about 10 s here; a loaded 2-core machine or a node waiting for its peers takes longer.
BOOT_TIMEOUT_SECONDS = 180
# rabbitmqctl itself answers within a second; `stop` waits for the node's process to exit.
CLI_TIMEOUT_SECONDS = 120


class ClusterError(Exception):
    """The cluster could not be started or stopped; the message says why and what to do about it."""


@dataclass(frozen=True)
class Node:
    name: str
    amqp_port: int
    management_port: int
    dist_port: int
    directory: Path

    @property
    def broker_url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.amqp_port}//"

    @property
    def management_api(self) -> str:
        return f"http://guest:guest@{HOST}:{self.management_port}/api/"

    @property
    def env_file(self) -> Path:
        return self.directory / "rabbitmq-env.conf"

    @property
    def pid_file(self) -> Path:
        return self.directory / "pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "log" / f"{self.name}.log"


@dataclass(frozen=True)
class Cluster:
    name: str
    nodes: tuple[Node, ...]

    @property
    def broker_url(self) -> str:
        """CELERY_BROKER_URL for the whole cluster: kombu's failover list, one URL per node, `;` between."""
        return ";".join(node.broker_url for node in self.nodes)


def cluster_define(*, name: str = NAME, directory: Path = DIRECTORY, amqp_port: int = AMQP_PORT,
                   management_port: int = MANAGEMENT_PORT, dist_port: int = DIST_PORT, size: int = 3) -> Cluster:
    """The cluster's nodes: `<name>-<n>@localhost`, each port the first one plus n - 1."""
    nodes = tuple(
        Node(name=f"{name}-{number}@localhost", amqp_port=amqp_port + number - 1,
             management_port=management_port + number - 1, dist_port=dist_port + number - 1,
             directory=directory.resolve() / f"{name}-{number}")
        for number in range(1, size + 1)
    )
    return Cluster(name=name, nodes=nodes)


def _cli(*command: str, timeout: float = CLI_TIMEOUT_SECONDS) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def node_running(node: Node) -> bool:
    """True when the node's RabbitMQ application is booted and running (not merely its Erlang VM)."""
    return _cli("rabbitmq-diagnostics", "-q", "-n", node.name, "check_running").returncode == 0


def cluster_running_nodes(node: Node) -> set[str]:
    """The names of the nodes `node` sees running in its cluster (itself included)."""
    result = _cli("rabbitmqctl", "-q", "-n", node.name, "cluster_status", "--formatter", "json")
    if result.returncode != 0:
        raise ClusterError(f"rabbitmqctl cluster_status on {node.name} failed:\n{result.stderr or result.stdout}")
    return set(json.loads(result.stdout)["running_nodes"])


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, port)) == 0


def cluster_formation_config(name: str, node_names: Sequence[str]) -> str:
    """rabbitmq.conf lines that make nodes find each other: here, and in compose's deploy/rabbitmq/cluster.conf."""
    peers = "".join(f"cluster_formation.classic_config.nodes.{number} = {peer}\n"
                    for number, peer in enumerate(node_names, 1))
    return f"cluster_name = {name}\ncluster_formation.peer_discovery_backend = classic_config\n{peers}"


def _files_write(node: Node, cluster: Cluster) -> None:
    """The node's own configuration, owned by the rabbitmq user; rewritten at each start of the node."""
    files = {
        node.env_file: (
            f"# {node.name}, written by scripts/rabbitmq_cluster.py at each start.\n"
            f"NODENAME={node.name}\n"
            f"CONFIG_FILE={node.directory / 'rabbitmq.conf'}\n"
            f"ENABLED_PLUGINS_FILE={node.directory / 'enabled_plugins'}\n"
            f"MNESIA_BASE={node.directory / 'data'}\n"
            f"LOG_BASE={node.directory / 'log'}\n"
            f"PID_FILE={node.pid_file}\n"
            f"DIST_PORT={node.dist_port}\n"
            # Inter-node traffic on loopback only, like the default node's (/etc/rabbitmq/rabbitmq-env.conf).
            f"ERL_EPMD_ADDRESS={HOST}\n"
            "SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'\n"
        ),
        node.directory / "rabbitmq.conf": (
            f"# {node.name}, written by scripts/rabbitmq_cluster.py at each start.\n"
            f"listeners.tcp.1 = {HOST}:{node.amqp_port}\n"
            f"management.tcp.ip = {HOST}\n"
            f"management.tcp.port = {node.management_port}\n"
            + cluster_formation_config(cluster.name, [peer.name for peer in cluster.nodes])
        ),
        node.directory / "enabled_plugins": "[rabbitmq_management].\n",
    }
    node.directory.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    if os.geteuid() == 0:
        owner = pwd.getpwnam(RABBITMQ_USER)
        for path in (node.directory, *files):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        # The node writes its data and logs there as rabbitmq, which needs every folder above it open.
        reachable = subprocess.run(["su", RABBITMQ_USER, "-s", "/bin/sh", "-c", 'test -w "$0"', str(node.directory)])
        if reachable.returncode != 0:
            raise ClusterError(f"The rabbitmq user cannot write to {node.directory}: choose a directory whose "
                               "parents others may enter (--dir), such as this checkout's var/.")


def _boot(nodes: Sequence[Node], cluster: Cluster) -> None:
    """Start `nodes` together and wait until each runs; on failure, say which and show its log's end."""
    for node in nodes:
        for port, option in ((node.amqp_port, "--amqp-port"), (node.management_port, "--management-port"),
                             (node.dist_port, "--dist-port")):
            if _port_taken(port):
                raise ClusterError(
                    f"Port {port} of {node.name} is taken: by another program (stop it, or give the cluster "
                    f"other ports with {option}), or by this node with RabbitMQ stopped inside it "
                    f"(rabbitmqctl -n {node.name} start_app)."
                )
        _files_write(node, cluster)
    # The node's env file is all it reads: RABBITMQ_* variables of the caller would override it.
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ_")}
    for node in nodes:
        started = subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, text=True, timeout=60,
                                 env={**environment, "RABBITMQ_CONF_ENV_FILE": str(node.env_file)})
        if started.returncode != 0:
            raise ClusterError(f"rabbitmq-server did not start {node.name}:\n{started.stdout}{started.stderr}")
    with ThreadPoolExecutor(len(nodes)) as pool:
        waits = list(pool.map(_await, nodes))
    failed = [(node, result) for node, result in zip(nodes, waits, strict=True) if result.returncode != 0]
    if failed:
        raise ClusterError("\n\n".join(
            f"{node.name} did not boot within {BOOT_TIMEOUT_SECONDS} s: {(result.stderr or result.stdout).strip()}"
            f"\nLast lines of {node.log_file}:\n{_log_tail(node)}" for node, result in failed
        ))


def _await(node: Node) -> subprocess.CompletedProcess:
    return _cli("rabbitmqctl", "-q", "-n", node.name, "wait", str(node.pid_file),
                "--timeout", str(BOOT_TIMEOUT_SECONDS), timeout=BOOT_TIMEOUT_SECONDS + 30)


def _log_tail(node: Node, lines: int = 20) -> str:
    try:
        return "\n".join(node.log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def quorum_queues_grow(cluster: Cluster) -> list[str]:
    """Give every quorum queue a member on every node; the members it added, as `queue (vhost v) on node`."""
    added = []
    for node in cluster.nodes:
        result = _cli("rabbitmq-queues", "-q", "-n", cluster.nodes[0].name, "grow", node.name, "all",
                      "--formatter", "json")
        if result.returncode != 0:
            raise ClusterError(f"rabbitmq-queues grow {node.name} failed:\n{result.stderr or result.stdout}")
        grown = json.loads(result.stdout or "[]")
        added += [f"{queue['name']} (vhost {queue['vhost']}) on {node.name}" for queue in grown]
    return added


def cluster_start(cluster: Cluster) -> list[Node]:
    """Start the nodes that are not running and make sure all form one cluster; the nodes it started."""
    stopped = [node for node in cluster.nodes if not node_running(node)]
    # A node that has data belongs to the cluster already: it boots with its peers. A new node joins a
    # running peer, so the very first node of a new cluster boots on its own before the others.
    members = [node for node in stopped if (node.directory / "data").exists()]
    newcomers = [node for node in stopped if node not in members]
    if members:
        _boot(members, cluster)
    if newcomers and len(newcomers) == len(cluster.nodes):
        _boot(newcomers[:1], cluster)
        newcomers = newcomers[1:]
    if newcomers:
        _boot(newcomers, cluster)
    expected = {node.name for node in cluster.nodes}
    for node in cluster.nodes:
        seen = cluster_running_nodes(node)
        if seen != expected:
            raise ClusterError(
                f"{node.name} sees {sorted(seen)} running, not the cluster {sorted(expected)}. A node that "
                f"booted alone keeps its own cluster: stop the cluster, delete that node's directory under "
                f"{node.directory.parent} and start again."
            )
    return stopped


def cluster_stop(cluster: Cluster) -> list[Node]:
    """Stop the cluster's running nodes, together; the nodes it stopped. Any other node is left alone."""
    running = [node for node in cluster.nodes if node_running(node)]
    with ThreadPoolExecutor(max(len(running), 1)) as pool:
        results = list(pool.map(
            lambda node: _cli("rabbitmqctl", "-q", "-n", node.name, "stop", str(node.pid_file)), running
        ))
    failed = [f"{node.name}: {(result.stderr or result.stdout).strip()}"
              for node, result in zip(running, results, strict=True) if result.returncode != 0]
    if failed:
        raise ClusterError("Could not stop " + "; ".join(failed))
    return running


def cluster_describe(cluster: Cluster) -> str:
    """How to reach the cluster, and the settings that point Conveyor at it."""
    width = max(len(node.name) for node in cluster.nodes)
    lines = [f"  {node.name:<{width}}  {node.broker_url}  management http://{HOST}:{node.management_port}/"
             f"  files {_shown(node.directory)}" for node in cluster.nodes]
    return "\n".join([
        f"RabbitMQ cluster {cluster.name!r}: {len(cluster.nodes)} nodes running (user guest / guest, loopback only)",
        *lines,
        "Point Conveyor at it (shell or .env), then `make run`:",
        f"  CELERY_BROKER_URL='{cluster.broker_url}'",
        f"  FLOWER_BROKER_API={cluster.nodes[0].management_api}",
    ])


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _require_privileges() -> None:
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != RABBITMQ_USER:
        raise ClusterError("Debian's RabbitMQ scripts run nodes as the rabbitmq user: run this as root "
                           "(sudo make cluster) or as rabbitmq.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--name", default=NAME, help="cluster name; its nodes are <name>-1@localhost and so on")
    parser.add_argument("--dir", type=Path, default=DIRECTORY, help="where the nodes' files live")
    parser.add_argument("--amqp-port", type=int, default=AMQP_PORT, help="AMQP port of the first node")
    parser.add_argument("--management-port", type=int, default=MANAGEMENT_PORT, help="its management port")
    parser.add_argument("--dist-port", type=int, default=DIST_PORT, help="its Erlang distribution port")
    args = parser.parse_args(argv)
    cluster = cluster_define(name=args.name, directory=args.dir, amqp_port=args.amqp_port,
                             management_port=args.management_port, dist_port=args.dist_port)
    try:
        _require_privileges()
        if args.action == "stop":
            stopped = cluster_stop(cluster)
            print(f"Stopped {', '.join(node.name for node in stopped)}." if stopped
                  else f"No node of cluster {cluster.name!r} was running.")
            return 0
        started = cluster_start(cluster)
        print(f"Started {', '.join(node.name for node in started)}." if started
              else "All nodes were running already; nothing was started.")
        added = quorum_queues_grow(cluster)
        print(f"Added quorum queue members: {', '.join(added)}." if added
              else "Every quorum queue has a member on each node.")
        print(cluster_describe(cluster))
        return 0
    except ClusterError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
