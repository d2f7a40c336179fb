"""The deployment files agree with each other, and production settings pass Django's deploy check."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from scripts.rabbitmq_cluster import cluster_formation_config

ROOT = Path(__file__).resolve().parents[2]
# Services that run several copies (`docker compose up --scale worker=4`): nothing of theirs may clash.
SCALED_SERVICES = ("worker", "worker-reports", "relay", "beat")
CLUSTER_NODES = ("rabbitmq-1", "rabbitmq-2", "rabbitmq-3")


def procfile_commands() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def compose_services() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def compose_command(service: dict) -> str:
    """The shell command a compose service runs: `sh -c <command>` with $$ meaning a literal $."""
    assert service.get("entrypoint") == ["sh", "-c"], "app services run their Procfile line through sh -c"
    (command,) = service["command"]
    return command.replace("$$", "$")


def test_every_procfile_process_has_a_compose_service_with_the_same_command():
    services = compose_services()
    for name, command in procfile_commands().items():
        assert name in services, f"Procfile process {name!r} has no service in docker-compose.yml"
        assert shlex.split(compose_command(services[name])) == shlex.split(command), name


def test_compose_has_healthchecked_postgres_and_rabbitmq_that_app_services_wait_for():
    services = compose_services()
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["rabbitmq"]
    assert "management" in services["rabbitmq"]["image"]
    for name in ("web", "worker", "beat", "flower"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["rabbitmq"]["condition"] == "service_healthy", name


def test_every_app_service_restarts_unless_stopped_and_migrate_runs_once():
    services = compose_services()
    for name in procfile_commands():
        assert services[name]["restart"] == "unless-stopped", name
    for name in ("postgres", "rabbitmq", *CLUSTER_NODES):
        assert services[name]["restart"] == "unless-stopped", name
    assert services["migrate"]["restart"] == "no"


def test_scaled_services_have_no_fixed_name_host_name_or_host_port_and_workers_keep_unique_node_names():
    services = compose_services()
    assert not [name for name, service in services.items() if "container_name" in service]
    for name in SCALED_SERVICES:
        assert not {"container_name", "hostname", "ports"} & services[name].keys(), name
    for name in ("worker", "worker-reports"):
        # run_worker names each worker <queue>@%h: %h is the container's own host name
        assert re.search(r"run_worker \w+$", compose_command(services[name])), name


def test_published_ports_listen_on_the_host_loopback_only():
    published = [(name, str(port)) for name, service in compose_services().items()
                 for port in service.get("ports", [])]
    assert published
    assert [entry for entry in published if not entry[1].startswith("127.0.0.1:")] == []


def test_flower_always_asks_for_a_password():
    environment = compose_services()["flower"]["environment"]
    assert environment["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_web_healthcheck_gets_healthz_on_its_own_port_with_a_host_django_allows():
    web = compose_services()["web"]
    (probe,) = [part for part in web["healthcheck"]["test"] if "/healthz" in part]
    url = re.search(r"http://[^'\"]+/healthz", probe).group(0)
    host_port = url.removeprefix("http://").removesuffix("/healthz")
    assert host_port.split(":")[1] == web["environment"]["WEB_BIND"].split(":")[1]
    # Whatever DJANGO_ALLOWED_HOSTS the deployer sets, the probe's Host header stays allowed.
    assert host_port.split(":")[0] in web["environment"]["DJANGO_ALLOWED_HOSTS"].split("${")[0].split(",")


def test_worker_healthchecks_ping_the_node_name_their_command_gives_the_worker():
    services = compose_services()
    for name in ("worker", "worker-reports"):
        node = re.search(r"run_worker (\w+)$", compose_command(services[name])).group(1)  # <queue>@%h
        check = services[name]["healthcheck"]
        assert check["test"][0] == "CMD-SHELL", name
        command = shlex.split(check["test"][1].replace("$$", "$"))
        assert command[:4] == ["celery", "-A", "config", "inspect"] and "ping" in command, name
        assert command[command.index("--destination") + 1] == f"{node}@${{HOSTNAME}}", name
        assert "--timeout" in command, name


def test_cluster_profile_runs_three_rabbitmq_nodes_joined_by_classic_peer_discovery():
    services = compose_services()
    nodes = {name: service for name, service in services.items() if "cluster" in service.get("profiles", [])}
    assert sorted(nodes) == list(CLUSTER_NODES)
    conf_files = set()
    for name, node in nodes.items():
        assert node["hostname"] == name and "management" in node["image"] and "healthcheck" in node
        assert "RABBITMQ_ERLANG_COOKIE" in node["environment"], name
        (conf,) = [volume.split(":") for volume in node["volumes"] if "/etc/rabbitmq/conf.d/" in volume]
        conf_files.add(conf[0])
    (conf_file,) = conf_files
    config_lines = [line for line in (ROOT / conf_file).read_text().splitlines() if not line.startswith("#")]
    # The settings `make cluster` starts real nodes with (tests/ops/test_rabbitmq_cluster.py).
    expected = cluster_formation_config("conveyor", [f"rabbit@{name}" for name in CLUSTER_NODES]).splitlines()
    assert config_lines == expected
    # A new node joins a running one: the first boots alone, the others once it is healthy.
    assert "depends_on" not in nodes["rabbitmq-1"]
    for name in CLUSTER_NODES[1:]:
        assert nodes[name]["depends_on"] == {"rabbitmq-1": {"condition": "service_healthy"}}, name


def test_app_services_wait_for_the_cluster_nodes_only_when_the_cluster_profile_runs():
    services = compose_services()
    for name in (*procfile_commands(), "migrate"):
        for node in CLUSTER_NODES:
            assert services[name]["depends_on"][node] == {"condition": "service_healthy", "required": False}, name


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean_env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **env}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=clean_env, capture_output=True,
                          text=True, timeout=120)


def test_production_settings_pass_the_deploy_check_with_a_secret_and_hosts():
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DJANGO_SETTINGS_MODULE="config.settings.production",
        DJANGO_SECRET_KEY="x" * 64 + "-a-long-random-production-secret",
        DJANGO_ALLOWED_HOSTS="conveyor.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_without_a_secret_stop_with_a_clear_error():
    result = _manage("check", DJANGO_SETTINGS_MODULE="config.settings.production", DJANGO_ALLOWED_HOSTS="x.example")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr
