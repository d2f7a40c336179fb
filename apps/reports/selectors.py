"""Reads of reports: where a job's result lives, and which finished report a user may download."""
import uuid

from django.contrib.auth.models import AbstractBaseUser

from apps.jobs.models import Job
from apps.jobs.selectors import jobs_visible_to

KIND = "reports.csv_summary"


def report_upload_name(*, job_id: uuid.UUID | str) -> str:
    """The storage name of a report job's uploaded CSV."""
    return f"reports/uploads/{job_id}.csv"


def report_result_name(*, job_id: uuid.UUID | str) -> str:
    """The storage name of a report job's result CSV."""
    return f"reports/results/{job_id}.csv"


def report_job_finished_for(*, user: AbstractBaseUser, job_id: uuid.UUID) -> Job | None:
    """The user's succeeded report job with this id (staff: anyone's), else None."""
    return jobs_visible_to(user=user).filter(id=job_id, kind=KIND, status=Job.Status.SUCCEEDED).first()
