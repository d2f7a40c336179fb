"""Report pages: the upload form (the kind's generic job form) and the result download."""
import uuid

from django.core.files.storage import default_storage
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect

from apps.jobs.api import ApiError, api_endpoint
from apps.reports import selectors


def report_new(request: HttpRequest) -> HttpResponse:
    return redirect("jobs:new-kind", kind=selectors.KIND)


@api_endpoint("GET")
def report_download(request: HttpRequest, job_id: uuid.UUID) -> HttpResponse:
    """The result CSV of a finished report, to its owner or staff; by session or API token."""
    job = selectors.report_job_finished_for(user=request.user, job_id=job_id)
    if job is None:
        raise ApiError(404, f"No finished report {job_id} that you can see.")
    stored = selectors.report_result_name(job_id=job.id)
    filename = f"summary-{job.params.get('filename', 'report.csv').removesuffix('.csv')}.csv"
    return FileResponse(default_storage.open(stored, "rb"), as_attachment=True, filename=filename,
                        content_type="text/csv")
