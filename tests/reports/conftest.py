"""Report fixtures: a worker on the reports queue, CSV files made by the test, cleanup of stored files."""
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from apps.jobs.models import Job
from apps.reports.selectors import KIND
from apps.reports.services import report_files

REGIONS = [f"region-{n:02d}" for n in range(20)]


@pytest.fixture
def reports_worker(start_worker):
    # One process, as in the Procfile; progress every 50 ms so a test sees it move.
    return start_worker(queue="reports", concurrency=1, CONVEYOR_REPORT_PROGRESS_SECONDS="0.05")


@pytest.fixture
def stored_reports_cleanup(transactional_db) -> Iterator[None]:
    """Delete the uploads and results of the reports this test ran."""
    yield
    for job in Job.objects.filter(kind=KIND):
        for name in report_files(job):
            if default_storage.exists(name):
                default_storage.delete(name)


def sales_csv(path: Path, *, rows: int, bad_line: int | None = None) -> dict[str, list]:
    """Write a CSV of `rows` sales (region, amount with cents, padding); the aggregates it should give.

    With `bad_line`, that line (the header is line 1) holds a non-numeric amount instead.
    """
    rng = random.Random(4)
    expected: dict[str, list] = {}
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("id,region,amount,note\n")
        for index in range(rows):
            region = rng.choice(REGIONS)
            amount = Decimal(rng.randint(-50_000, 500_000)) / 100
            line = index + 2
            text = "twelve" if line == bad_line else str(amount)
            out.write(f'{index},{region},{text},"note, with a comma and padding {"x" * 40}"\n')
            if region in expected:
                group = expected[region]
                group[0] += 1
                group[1] += amount
                group[2], group[3] = min(group[2], amount), max(group[3], amount)
            else:
                expected[region] = [1, amount, amount, amount]
    return expected
