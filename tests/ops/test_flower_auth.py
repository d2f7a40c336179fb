"""Flower asks for a password under `make run`: FLOWER_BASIC_AUTH when set, else one generated once and printed."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from scripts.flower_auth import FlowerAuthError, flower_auth_ensure
from tests.ops.test_deployment import procfile_commands
from tests.processes import free_port, process_start, subprocess_env, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_without_flower_basic_auth_a_password_is_generated_once_kept_for_its_owner_only_and_printed(tmp_path):
    saved = tmp_path / "var" / "flower-auth"

    first = flower_auth_ensure(environment={}, dotenv=tmp_path / ".env", saved=saved)

    user, password = first.credentials.split(":")
    assert user == "ops" and len(password) >= 20
    assert saved.read_text() == f"{first.credentials}\n"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert first.message.startswith(f"Created Flower's sign-in: ops / {password} ")

    again = flower_auth_ensure(environment={}, dotenv=tmp_path / ".env", saved=saved)

    assert again.credentials == first.credentials
    assert again.message.startswith(f"Flower's sign-in: ops / {password} ")


def test_flower_basic_auth_set_in_dotenv_or_the_environment_is_used_as_honcho_passes_it_and_nothing_is_saved(tmp_path):
    saved = tmp_path / "flower-auth"
    dotenv = tmp_path / ".env"

    from_environment = flower_auth_ensure(environment={"FLOWER_BASIC_AUTH": "alice:env-pass"}, dotenv=dotenv,
                                          saved=saved)
    dotenv.write_text("FLOWER_BASIC_AUTH=bob:dotenv-pass\n")
    # honcho starts Flower with .env over the environment, so .env's value is the one Flower checks.
    from_dotenv = flower_auth_ensure(environment={"FLOWER_BASIC_AUTH": "alice:env-pass"}, dotenv=dotenv, saved=saved)

    assert from_environment.credentials == "alice:env-pass"
    assert from_dotenv.credentials == "bob:dotenv-pass"
    assert "alice" in from_environment.message and "env-pass" not in from_environment.message
    assert not saved.exists()


@pytest.mark.parametrize("value", ["no-colon", "user:", ":password", "alice:pass,bob"])
def test_credentials_flower_could_never_accept_are_refused_with_what_to_write(tmp_path, value):
    with pytest.raises(FlowerAuthError, match="write them as user:password"):
        flower_auth_ensure(environment={"FLOWER_BASIC_AUTH": value}, dotenv=tmp_path / ".env",
                           saved=tmp_path / "flower-auth")


def _script(tmp_path: Path) -> subprocess.CompletedProcess:
    """The script as `make run` runs it, on this test's files, with no FLOWER_BASIC_AUTH of the caller."""
    environment = {key: value for key, value in os.environ.items() if key != "FLOWER_BASIC_AUTH"}
    return subprocess.run(
        [sys.executable, "-m", "scripts.flower_auth", "--env-file", str(tmp_path / ".env"),
         "--saved", str(tmp_path / "flower-auth")],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )


def test_the_script_prints_the_sign_in_for_a_person_and_only_the_value_for_make(tmp_path):
    result = _script(tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == (tmp_path / "flower-auth").read_text()
    password = result.stdout.strip().split(":")[1]
    assert f"Created Flower's sign-in: ops / {password}" in result.stderr


@pytest.mark.integration
def test_flower_started_from_the_procfile_with_the_scripts_value_refuses_anyone_without_it(tmp_path):
    credentials = _script(tmp_path).stdout.strip()
    port = free_port()
    # Given Flower started as honcho starts it: the Procfile line through sh, FLOWER_BASIC_AUTH exported
    command = procfile_commands()["flower"].replace("--port=5555", f"--port={port}")
    flower = process_start("flower", ["sh", "-c", command], {
        **subprocess_env(FLOWER_BASIC_AUTH=credentials, FLOWER_DB=str(tmp_path / "flower.db")),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    })
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: _answers(url) or flower.popen.poll() is not None, timeout=60, what="Flower to listen")
        assert flower.popen.poll() is None, flower.output()
        user, password = credentials.split(":")

        # then it refuses a visitor without the password, or with a wrong one, and lets the right one in
        assert requests.get(url, timeout=10).status_code == 401
        assert requests.get(url, auth=(user, "wrong"), timeout=10).status_code == 401
        assert requests.get(url, auth=(user, password), timeout=10).status_code == 200
    finally:
        flower.stop()


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return False
    return True
