"""The benchmark's smoke run: every measurement runs end to end in seconds and writes a well-formed table.

Timing never fails this test; it only proves the harness works, so the benchmark never rots.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from bench import report

ROOT = Path(__file__).resolve().parents[2]


def _smoke_database_url() -> str:
    database = settings.DATABASES["default"]
    password = f":{database['PASSWORD']}" if database["PASSWORD"] else ""
    host = f"{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}"
    return f"postgres://{database['USER']}{password}@{host}/{database['NAME']}_bench_smoke"


# The smoke run's own database and queues, named after this test run's (DATABASE_URL and
# CONVEYOR_QUEUE_PREFIX), so test runs side by side on one machine keep apart. Read at import,
# before pytest-django renames the test database.
SMOKE_DATABASE_URL = _smoke_database_url()
SMOKE_QUEUE_PREFIX = f"{settings.CONVEYOR_QUEUE_PREFIX}bench-smoke-"


def smoke_run(command: list[str], *, timeout: float) -> None:
    """Run `command` from the repository and fail with its output unless it exits 0 within `timeout` seconds.

    In a session of its own, so a run that hangs is stopped with every web and worker process it started.
    """
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        stdout, stderr = run.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        stdout, stderr = run.communicate()
        raise AssertionError(f"The smoke run took over {timeout:g} s:\n{stdout[-3000:]}{stderr[-5000:]}") from None
    assert run.returncode == 0, stdout[-3000:] + stderr[-5000:]


def test_smoke_run_writes_results_and_a_table_with_every_measurement(tmp_path: Path):
    # given the real broker and database; when the benchmark runs at smoke size, backlog included
    command = [
        sys.executable, "-m", "bench.run", "--smoke", "--large", "--no-readme", "--output", str(tmp_path),
        "--database-url", SMOKE_DATABASE_URL, "--queue-prefix", SMOKE_QUEUE_PREFIX,
    ]
    smoke_run(command, timeout=300)
    # then it succeeds and writes JSON with a figure for every measurement, and the table shows them
    results = json.loads((tmp_path / "latest.json").read_text())
    submit, e2e = results["submit"]["throughput"], results["end_to_end"]
    assert all(submit[side]["median"] > 0 for side in ("confirmed", "baseline", "conveyor"))
    assert all(e2e["throughput"][side]["median"] > 0 and e2e["cpu_per_1000"][side]["median"] > 0
               for side in ("stock", "baseline", "conveyor"))
    assert e2e["results_in_postgres"] and e2e["admin_shows_results"]
    assert [work["delay_ms"] for work in results["real_work"]] == [100, 10]
    for work in results["real_work"]:
        for side in ("threads", "prefork", "conveyor"):
            assert work["throughput"][side]["median"] > 0 and work["cpu_per_1000"][side]["median"] > 0
            assert work["peak_in_flight"][side] >= 1
    assert results["latency"]["samples"] == 20 and results["latency_loaded"]["samples"] > 0
    assert results["backlog"]["all_succeeded"]
    assert all(results["memory"][role][side]["idle_mib"] > 0 for role in ("web", "worker")
               for side in ("baseline", "conveyor"))
    table = (tmp_path / "latest.md").read_text()
    assert table == report.markdown(results)
    for measurement in ("Submit, requests/s (baseline: `delay()` view with publisher confirms)",
                        "End to end", "Celery + django-celery-results", "Real work", "answered after 10 ms",
                        "Latency 202", "submissions/s, half the end-to-end rate", "CPU s per 1,000 jobs",
                        "Worker RSS", "Backlog"):
        assert measurement in table


def test_readme_update_replaces_only_the_table_between_its_markers(tmp_path: Path):
    # given a README with a benchmark table between the markers and text around it
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n## Benchmark\n\n{report.README_START}\nold\n{report.README_END}\n\nAfter.\n")
    # when the table is updated
    report.readme_update(readme, "| new |\n")
    # then only the block changed
    expected = f"# Title\n\n## Benchmark\n\n{report.README_START}\n| new |\n{report.README_END}\n\nAfter.\n"
    assert readme.read_text() == expected
