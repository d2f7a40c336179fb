"""Log lines: the request's id on web lines, JSON lines in production, bounded per-job logs."""
import contextvars
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from apps.jobs.logs import job_log_capture
from apps.jobs.models import Job
from apps.jobs.services import job_submit
from apps.ops.log import LogContextFilter, trace_id_var

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def root_lines() -> list[str]:
    """Lines the root logger writes while the test runs, formatted with the context filter as in settings."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(f"trace={record.trace_id} {record.getMessage()}")
    handler.addFilter(LogContextFilter())
    logging.getLogger().addHandler(handler)
    yield lines
    logging.getLogger().removeHandler(handler)


@pytest.mark.django_db
def test_a_web_request_log_line_carries_the_id_from_x_request_id(client, root_lines):
    response = client.get("/no-such-page", HTTP_X_REQUEST_ID="edge-77")
    assert response.status_code == 404 and response["X-Request-ID"] == "edge-77"
    assert "trace=edge-77 Not Found: /no-such-page" in root_lines
    assert "trace=edge-77 GET /no-such-page 404" in " ".join(root_lines)  # the access line


@pytest.mark.django_db
def test_a_request_without_x_request_id_gets_a_new_id_in_the_response_and_its_log_lines(client, root_lines):
    response = client.get("/no-such-page")
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    assert f"trace={request_id} Not Found: /no-such-page" in root_lines


def test_production_writes_one_json_object_per_log_line():
    env = {
        "PATH": "/usr/bin:/bin", "HOME": "/tmp", "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": "x" * 64, "DJANGO_ALLOWED_HOSTS": "conveyor.example.com",
    }
    code = "import django, logging; django.setup(); logging.getLogger('conveyor.check').warning('disk %s', 'full')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    (line,) = [line for line in result.stderr.splitlines() if "conveyor.check" in line]
    record = json.loads(line)
    assert record["message"] == "disk full" and record["level"] == "WARNING" and record["logger"] == "conveyor.check"
    assert record["trace_id"] == "-" and record["job_id"] == "-" and record["time"].endswith("+00:00")


def test_job_log_keeps_only_lines_logged_inside_the_capture_and_cuts_long_ones():
    logger = logging.getLogger("apps.test_job_log")
    logger.warning("before the attempt")
    with job_log_capture(max_lines=10, max_chars=20) as log:
        logger.warning("short")
        logger.warning("x" * 50)
    logger.warning("after the attempt")
    messages = [line["message"] for line in log.lines()]
    assert messages == ["short", "x" * 20 + "… (30 characters cut)"]


@pytest.mark.django_db
def test_a_job_submitted_without_a_trace_id_takes_the_current_one():
    # given code that runs inside a request (or a job) with trace id "req-9" and submits a job itself
    def submit_inside_the_request() -> Job:
        trace_id_var.set("req-9")
        return job_submit(kind="diagnostics.noop", params={}, submitted_by=None)[0]

    job = contextvars.copy_context().run(submit_inside_the_request)
    # then the job carries the request's id, and outside any request a job has none
    assert job.trace_id == "req-9"
    assert job_submit(kind="diagnostics.noop", params={}, submitted_by=None)[0].trace_id == ""
