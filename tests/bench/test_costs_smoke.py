"""The per-job cost measurement's smoke run (`python -m bench.costs --smoke`): it runs end to end on the real
processes and servers and writes every figure docs/scaling.md reasons from. Its figures mean nothing at this size.
"""
import json
import sys
from pathlib import Path

from django.conf import settings

from tests.bench.test_smoke import _smoke_database_url, smoke_run

# Its own database, queues and RabbitMQ vhost, named after this test run's, so runs side by side keep apart.
COSTS_DATABASE_URL = _smoke_database_url().replace("_bench_smoke", "_costs_smoke")
COSTS_QUEUE_PREFIX = f"{settings.CONVEYOR_QUEUE_PREFIX}costs-smoke-"


def test_smoke_run_writes_per_job_costs_of_every_part(tmp_path: Path):
    # given the real broker and database; when the measurement runs at smoke size
    vhost = COSTS_QUEUE_PREFIX.rstrip("-")
    command = [
        sys.executable, "-m", "bench.costs", "--smoke", "--output", str(tmp_path),
        "--database-url", COSTS_DATABASE_URL, "--queue-prefix", COSTS_QUEUE_PREFIX,
        "--broker-url", f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
    ]
    smoke_run(command, timeout=180)
    # then the JSON has the CPU of each part, PostgreSQL's writes and the relay's passes per job
    results = json.loads((tmp_path / "costs.json").read_text())
    for measured in (results["end_to_end"]["median"], results["webhooks"]["median"]):
        cpu = measured["cpu_ms"]
        assert cpu["web"] > 0 and cpu["worker"] > 0 and cpu["postgres_backends"]["all"] > 0
        assert {"web", "relay", "worker"} <= set(cpu["postgres_backends"])
        assert measured["wal"]["lsn_bytes_all_databases"] > 0
        assert measured["jobs_per_relay_pass"] >= 1
    relay = results["relay_backlog"][0]
    assert relay["batch_size"] == 500 and relay["passes"] == 1 and relay["jobs_per_second"] > 0
    assert "| per job |" in (tmp_path / "costs.md").read_text()
