"""Writes for reports: store a new job's upload, summarise a CSV per group while streaming through it, and name the
files a report job owns."""
import csv
import io
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.forms import Form
from django.urls import reverse

from apps.jobs.errors import PermanentJobError
from apps.jobs.models import Job
from apps.reports.selectors import report_result_name, report_upload_name


def report_upload_store(job: Job, form: Form) -> None:
    """Save a new report job's upload with Django's storage, under a name its job id gives
    (JobKind.files_save: called only once the job is known to be new)."""
    upload = form.cleaned_data["file"]
    upload.seek(0)
    name = report_upload_name(job_id=job.id)
    default_storage.delete(name)  # never a second copy under a suffixed name
    default_storage.save(name, upload)


def report_files(job: Job) -> list[str]:
    """The files a report job owns: its upload and its result (JobKind.files, for retention)."""
    return [report_upload_name(job_id=job.id), report_result_name(job_id=job.id)]


class _CountingReader(io.RawIOBase):
    """Reads the stored file and counts the bytes read, for progress."""

    def __init__(self, source):
        self.source, self.bytes_read = source, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.source.read(len(buffer))
        buffer[: len(data)] = data
        self.bytes_read += len(data)
        return len(data)


# The mean is written to six decimal places; exact decimal division runs to 28 digits that nobody reads.
MEAN_PLACES = Decimal("0.000001")


def _number(value: str, *, line: int, column: str) -> Decimal:
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise PermanentJobError(
            f"Line {line:,}: column {column!r} holds {value!r}, which is not a number. "
            "Fix that line and submit the file again."
        )
    return number


def report_csv_summarize(
    *, job_id: uuid.UUID, group_by: str, value_column: str, progress: Callable[[float, str], None]
) -> dict:
    """Per group of `group_by`: count, sum, mean, min and max of `value_column`, written as a CSV.

    Reads the file in chunks of CONVEYOR_REPORT_CHUNK_BYTES, so memory grows with the number of
    groups, never with the file. The result is saved only when the whole file was read: a bad line
    fails the job with nothing stored.
    """
    upload = report_upload_name(job_id=job_id)
    if not default_storage.exists(upload):
        raise PermanentJobError("The uploaded file is gone (deleted from storage); submit the report again.")
    size = default_storage.size(upload)
    groups: dict[str, list] = {}
    rows = 0
    interval = settings.CONVEYOR_REPORT_PROGRESS_SECONDS
    with default_storage.open(upload, "rb") as stored:
        counted = _CountingReader(stored)
        text = io.TextIOWrapper(
            io.BufferedReader(counted, buffer_size=settings.CONVEYOR_REPORT_CHUNK_BYTES), encoding="utf-8-sig",
            newline="",
        )
        reader = csv.reader(text)
        try:
            header = [name.strip() for name in next(reader)]
            key_at, value_at = header.index(group_by), header.index(value_column)
        except (StopIteration, ValueError):
            raise PermanentJobError(f"The file no longer has the columns {group_by!r} and {value_column!r}.") from None
        width = max(key_at, value_at) + 1
        reported = time.monotonic()
        try:
            for row in reader:
                if not row:
                    continue
                if len(row) < width:
                    raise PermanentJobError(
                        f"Line {reader.line_num:,} has {len(row)} fields; {value_column!r} is field {value_at + 1}. "
                        "Fix that line and submit the file again."
                    )
                value = _number(row[value_at], line=reader.line_num, column=value_column)
                key = row[key_at]
                group = groups.get(key)
                if group is None:
                    if len(groups) >= settings.CONVEYOR_REPORT_MAX_GROUPS:
                        raise PermanentJobError(
                            f"Line {reader.line_num:,}: more than {settings.CONVEYOR_REPORT_MAX_GROUPS:,} distinct "
                            f"values in {group_by!r}; group by a column with fewer values."
                        )
                    groups[key] = [1, value, value, value]
                else:
                    group[0] += 1
                    group[1] += value
                    group[2] = min(group[2], value)
                    group[3] = max(group[3], value)
                rows += 1
                now = time.monotonic()
                if now - reported >= interval:
                    reported = now
                    progress(100 * counted.bytes_read / max(size, 1), f"{rows:,} rows read")
        except UnicodeDecodeError:
            raise PermanentJobError(
                f"Line {reader.line_num + 1:,} is not UTF-8 text; save the file as \"CSV UTF-8\" and submit it again."
            ) from None
        except csv.Error as exc:
            raise PermanentJobError(f"Line {reader.line_num:,} is not valid CSV: {exc}.") from None
    result_name = _result_save(job_id=job_id, groups=groups, group_by=group_by)
    return {
        "rows": rows,
        "groups": len(groups),
        "result": result_name,
        "download_url": reverse("reports:download", args=[job_id]),
    }


def _result_save(*, job_id: uuid.UUID, groups: dict[str, list], group_by: str) -> str:
    # Spools to disk past 1 MB, so a report with many groups never holds its whole CSV in memory.
    with tempfile.SpooledTemporaryFile(max_size=1024 * 1024, mode="w+b") as spool:
        out = io.TextIOWrapper(spool, encoding="utf-8", newline="", write_through=True)
        writer = csv.writer(out)
        writer.writerow([group_by, "count", "sum", "mean", "min", "max"])
        for key in sorted(groups):
            count, total, low, high = groups[key]
            writer.writerow([key, count, total, (total / count).quantize(MEAN_PLACES), low, high])
        out.detach()
        spool.seek(0)
        name = report_result_name(job_id=job_id)
        # A rerun after a worker died between saving and finishing replaces the earlier result.
        default_storage.delete(name)
        return default_storage.save(name, File(spool, name=name))
