"""The deployment files agree with each other, and production settings pass Django's deploy check."""
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def procfile_commands() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def compose_command(service: dict) -> str:
    """The shell command a compose service runs: `sh -c <command>` with $$ meaning a literal $."""
    assert service.get("entrypoint") == ["sh", "-c"], "app services run their Procfile line through sh -c"
    (command,) = service["command"]
    return command.replace("$$", "$")


def test_every_procfile_process_has_a_compose_service_with_the_same_command():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name, command in procfile_commands().items():
        assert name in services, f"Procfile process {name!r} has no service in docker-compose.yml"
        assert shlex.split(compose_command(services[name])) == shlex.split(command), name


def test_compose_has_healthchecked_postgres_and_rabbitmq_that_app_services_wait_for():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["rabbitmq"]
    assert "management" in services["rabbitmq"]["image"]
    for name in ("web", "worker", "beat", "flower"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["rabbitmq"]["condition"] == "service_healthy", name


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
