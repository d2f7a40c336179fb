"""reports.csv_summary on a real worker of the reports queue: exact aggregates, flat memory, bad lines."""
import csv
import io
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.test import Client

from apps.jobs.models import Job
from apps.reports.selectors import report_result_name
from tests.processes import Process, wait_until
from tests.reports.conftest import sales_csv

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stored_reports_cleanup")]


def submit(api_client: Client, path: Path) -> Job:
    with path.open("rb") as upload:
        response = api_client.post(
            "/api/jobs/",
            {"kind": "reports.csv_summary", "group_by": "region", "value_column": "amount", "file": upload},
        )
    assert response.status_code == 202, response.content
    return Job.objects.get(id=response.json()["id"])


def pool_process(worker: Process) -> int:
    """The pid of the worker's only pool process, which runs the jobs."""
    children = Path(f"/proc/{worker.popen.pid}/task/{worker.popen.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def memory_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak so far) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_200000_rows_give_exact_aggregates_with_moving_progress_and_flat_memory(
    reports_worker, api_client, user, tmp_path
):
    # given a worker that has already run one small report (so its imports and connections exist)
    small = tmp_path / "small.csv"
    sales_csv(small, rows=10)
    warm = submit(api_client, small)
    wait_until(lambda: Job.objects.get(id=warm.id).status == Job.Status.SUCCEEDED, timeout=30, what="the warm-up")
    pid = pool_process(reports_worker)
    peak_before = memory_kib(pid, "VmHWM")
    # when a 200,000-row CSV is summarised
    big = tmp_path / "sales.csv"
    expected = sales_csv(big, rows=200_000)
    job = submit(api_client, big)
    assert job.queue == "reports"
    seen_progress = set()

    def finished() -> bool:
        job.refresh_from_db()
        seen_progress.add(job.progress)
        return job.is_finished

    wait_until(finished, timeout=120, interval=0.02, what="the report")
    # then it succeeds, and the progress bar moved through values between 0 and 100 on the way
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert any(0 < percent < 100 for percent in seen_progress), seen_progress
    # and the pool process's peak memory grew by far less than the file's size (it never held the file)
    growth_kib = memory_kib(pid, "VmHWM") - peak_before
    file_kib = big.stat().st_size // 1024
    assert growth_kib < file_kib / 4, f"peak memory grew {growth_kib} KiB reading a {file_kib} KiB file"
    # and the result CSV, downloaded through the API, holds exactly the independently computed aggregates
    result = api_client.get(f"/api/jobs/{job.id}/").json()["result"]
    assert result["rows"] == 200_000 and result["groups"] == len(expected)
    download = api_client.get(result["download_url"])
    assert download.status_code == 200 and download["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert [row["region"] for row in rows] == sorted(expected)
    for row in rows:
        count, total, low, high = expected[row["region"]]
        assert (int(row["count"]), Decimal(row["sum"]), Decimal(row["min"]), Decimal(row["max"])) == (
            count, total, low, high,
        )
        assert abs(Fraction(row["mean"]) - Fraction(total) / count) <= Fraction(5, 10**7)  # six places
    # and the job page links to it
    page = Client()
    page.force_login(user)
    assert result["download_url"] in page.get(f"/jobs/{job.id}/").content.decode()


def test_non_numeric_value_on_line_40000_fails_with_line_and_value_and_stores_no_result(
    reports_worker, api_client, tmp_path
):
    path = tmp_path / "bad.csv"
    sales_csv(path, rows=45_000, bad_line=40_000)
    job = submit(api_client, path)
    wait_until(lambda: Job.objects.get(id=job.id).is_finished, timeout=60, what="the report")
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED and job.attempts == 1
    assert "Line 40,000" in job.error and "'twelve'" in job.error and "not a number" in job.error
    assert not default_storage.exists(report_result_name(job_id=job.id))
