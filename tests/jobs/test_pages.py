"""The job pages in the test client: sign-in required, forms, the list and the job page."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.jobs.models import Job

pytestmark = pytest.mark.django_db


def test_pages_require_sign_in(client):
    response = client.get("/jobs/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_kind_picker_lists_every_kind(signed_in):
    page = signed_in.get("/jobs/new/").content.decode()
    for name in ("diagnostics.noop", "diagnostics.sleep", "diagnostics.flaky", "diagnostics.fail"):
        assert f"/jobs/new/{name}/" in page


def test_form_submission_creates_a_job_and_redirects_to_its_page(signed_in, user):
    response = signed_in.post("/jobs/new/diagnostics.sleep/", {"seconds": "2", "steps": "4"})
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.id}/"
    assert job.params == {"seconds": 2.0, "steps": 4} and job.submitted_by == user
    page = signed_in.get(response["Location"]).content.decode()
    assert "diagnostics.sleep" in page and 'id="job-progress"' in page


def test_invalid_form_shows_field_errors_and_creates_nothing(signed_in):
    response = signed_in.post("/jobs/new/diagnostics.sleep/", {"seconds": "-3"})
    assert response.status_code == 200
    assert "greater than or equal to 0" in response.content.decode()
    assert Job.objects.count() == 0


def test_unknown_kind_page_is_404(signed_in):
    assert signed_in.get("/jobs/new/no.such/").status_code == 404


def test_list_shows_own_jobs_only_and_filters_by_status(signed_in, user, other_user):
    mine = Job.objects.create(kind="diagnostics.noop", queue="default", submitted_by=user, status="failed")
    theirs = Job.objects.create(kind="diagnostics.noop", queue="default", submitted_by=other_user)
    page = signed_in.get("/jobs/").content.decode()
    assert str(mine.id)[:8] in page and str(theirs.id)[:8] not in page
    assert str(mine.id)[:8] not in signed_in.get("/jobs/?status=queued").content.decode()
    assert signed_in.get(f"/jobs/{theirs.id}/").status_code == 404


def test_list_pages_newest_first_without_counting_the_jobs(signed_in, user, settings):
    # given three jobs and pages of two
    settings.CONVEYOR_PAGE_SIZE = 2
    jobs = [Job.objects.create(kind="diagnostics.noop", queue="default", submitted_by=user) for _ in range(3)]
    newest_first = [str(job.id)[:8] for job in reversed(jobs)]
    # when the first two pages are read
    with CaptureQueriesContext(connection) as queries:
        first = signed_in.get("/jobs/").content.decode()
    second = signed_in.get("/jobs/?page=2").content.decode()
    # then each shows its jobs with links to the pages around it, and no COUNT ran
    assert newest_first[0] in first and newest_first[1] in first and newest_first[2] not in first
    assert "page=2" in first and "Newer" not in first
    assert newest_first[2] in second and "page=1" in second and "Older" not in second
    assert not any("COUNT(" in query["sql"] for query in queries)
    assert signed_in.get("/jobs/?page=soon").status_code == 200


def test_retry_button_requeues_a_failed_job(signed_in, user):
    job = Job.objects.create(kind="diagnostics.noop", queue="default", submitted_by=user, status="failed")
    response = signed_in.post(f"/jobs/{job.id}/retry/", follow=True)
    job.refresh_from_db()
    assert job.status == "queued"
    assert "Job queued again." in response.content.decode()


@pytest.mark.parametrize(
    ("status", "retry_shown", "cancel_shown"),
    [("failed", True, False), ("queued", False, True), ("running", False, True), ("succeeded", False, False)],
)
def test_job_page_shows_only_the_actions_the_status_allows(signed_in, user, status, retry_shown, cancel_shown):
    # diagnostics.sleep is interruptible, so a running one can be cancelled
    job = Job.objects.create(kind="diagnostics.sleep", queue="default", submitted_by=user, status=status)
    page = signed_in.get(f"/jobs/{job.id}/").content.decode()
    retry = page[page.index('id="job-retry"') : page.index(">", page.index('id="job-retry"'))]
    cancel = page[page.index('id="job-cancel"') : page.index(">", page.index('id="job-cancel"'))]
    assert ("hidden" not in retry) == retry_shown  # the form tag itself, not its csrf input
    assert ("hidden" not in cancel) == cancel_shown
