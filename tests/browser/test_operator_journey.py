"""An operator's journey in headless Chromium against the real server, worker and Flower."""
import uuid

import pytest
from django.db import transaction
from playwright.sync_api import Page, expect

from apps.jobs.models import Job
from apps.jobs.services import job_submit
from tests.processes import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _submitted(kind: str, params: dict, user=None) -> Job:
    with transaction.atomic():
        job, _ = job_submit(kind=kind, params=params, submitted_by=user)
    return job


def test_operator_signs_in_and_sees_the_job_list(page: Page, sign_in, screenshot):
    sign_in()
    expect(page.locator("h1")).to_have_text("Jobs")
    screenshot("job-list")


def test_sleep_job_submitted_through_the_form_shows_its_progress_bar_reach_100(page: Page, live_server, sign_in,
                                                                              worker, screenshot):
    sign_in()
    page.goto(f"{live_server.url}/jobs/new/diagnostics.sleep/")
    page.fill("input[name=seconds]", "2")
    page.fill("input[name=steps]", "4")
    screenshot("form")
    page.click("main button[type=submit]")
    expect(page.locator("#job-progress-label")).to_have_text("100%", timeout=30_000)
    expect(page.locator("#job-status")).to_have_text("succeeded")
    assert page.locator("#job-progress").evaluate("bar => bar.value") == 100
    expect(page.locator("#job-log")).to_contain_text("Slept step 4 of 4.")
    screenshot("job-page")


def test_operator_finds_a_job_in_the_admin_by_searching_a_param(page: Page, live_server, sign_in, screenshot):
    needle = f"needle-{uuid.uuid4().hex[:8]}"
    wanted = Job.objects.create(kind="diagnostics.fail", queue="default", params={"message": needle})
    Job.objects.create(kind="diagnostics.fail", queue="default", params={"message": "hay"})
    sign_in()
    page.goto(f"{live_server.url}/admin/jobs/job/")
    page.fill("#searchbar", f"message={needle}")
    page.press("#searchbar", "Enter")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(str(wanted.id)[:8])
    screenshot("search-result")
    rows.first.locator("th a, td a").first.click()
    expect(page.locator(".field-params_pretty")).to_contain_text(needle)
    screenshot("job-admin-page")


def test_failed_job_retried_with_the_admin_action_then_succeeds(page: Page, live_server, sign_in, worker, screenshot):
    job = _submitted("tests.fail_first", {})
    wait_until(lambda: Job.objects.filter(id=job.id, status="failed").exists(), timeout=30, what="the job to fail")
    sign_in()
    page.goto(f"{live_server.url}/admin/jobs/job/?status__exact=failed")
    page.check(f"input[name=_selected_action][value='{job.id}']")
    page.select_option("select[name=action]", "retry_jobs")
    screenshot("action-chosen")
    page.click("button[name=index]")
    expect(page.locator(".messagelist")).to_contain_text("Retried 1 job(s).")
    wait_until(lambda: Job.objects.filter(id=job.id, status="succeeded").exists(), timeout=30,
               what="the retried job to succeed")
    page.goto(f"{live_server.url}/admin/jobs/job/{job.id}/change/")
    expect(page.locator(".field-status_badge")).to_contain_text("Succeeded")
    expect(page.locator(".field-timeline")).to_contain_text("attempt 2 succeeded")
    screenshot("retried-job")


def test_operator_opens_the_task_in_flower_from_the_admin(page: Page, live_server, sign_in, worker, flower,
                                                         screenshot):
    job = _submitted("diagnostics.noop", {})
    wait_until(lambda: Job.objects.filter(id=job.id, status="succeeded").exists(), timeout=30, what="the job")
    sign_in()
    page.goto(f"{live_server.url}/admin/jobs/job/{job.id}/change/")
    link = page.get_by_role("link", name="Task in Flower")
    expect(link).to_have_attribute("href", f"{flower}/task/{job.id}")
    link.click()
    task_url = f"{flower}/task/{job.id}"
    page.wait_for_url(task_url)
    # Flower learns of the task from the worker's events; a moment after it ran, its page shows it.
    wait_until(lambda: page.goto(task_url) and "SUCCESS" in page.content(), timeout=20, interval=1,
               what="Flower to show the task")
    expect(page.locator("body")).to_contain_text(str(job.id))
    screenshot("flower-task")


def test_dashboard_shows_the_chart_queues_and_workers(page: Page, live_server, sign_in, worker, screenshot):
    for _ in range(3):
        _submitted("diagnostics.noop", {})
    _submitted("diagnostics.fail", {"message": "on purpose"})
    wait_until(lambda: Job.objects.filter(status__in=["succeeded", "failed"]).count() == 4, timeout=30,
               what="the jobs to finish")
    sign_in()
    page.goto(f"{live_server.url}/admin/jobs/job/dashboard/")
    expect(page.locator("h2").first).to_contain_text("3 succeeded, 1 failed")
    expect(page.locator("#workers")).to_contain_text(worker.name)
    assert page.locator("#throughput-chart rect").count() == 120
    screenshot("dashboard")
