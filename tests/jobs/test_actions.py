"""One table of which operator actions each state allows, checked against every place that offers them: the job's
JSON, the API's answers, the job page's buttons, the admin's buttons and its bulk actions."""
import re

import pytest
from django.test import Client

from apps.jobs.models import Job

pytestmark = pytest.mark.django_db

# (status, kind, the actions allowed): diagnostics.sleep stops at its progress reports, diagnostics.noop cannot.
TABLE = [
    ("queued", "diagnostics.noop", {"cancel"}),
    ("scheduled", "diagnostics.noop", {"cancel"}),
    ("retrying", "diagnostics.noop", {"cancel"}),
    ("running", "diagnostics.sleep", {"cancel"}),
    ("running", "diagnostics.noop", set()),
    ("succeeded", "diagnostics.noop", set()),
    ("failed", "diagnostics.noop", {"retry"}),
    ("cancelled", "diagnostics.noop", {"retry"}),
]
ACTIONS = ("retry", "cancel")


@pytest.fixture
def operator(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("olga", password="olga-pass-123"))
    return client


def _job(status: str, kind: str) -> Job:
    return Job.objects.create(kind=kind, queue="default", status=status, params={"seconds": 1})


def _visible_forms(page: str) -> set[str]:
    """The job page's action forms that are not hidden."""
    forms = re.findall(r'<form id="job-\w+" data-action="(\w+)"[^>]*?(hidden)?>', page, re.S)
    return {action for action, hidden in forms if not hidden}


@pytest.mark.parametrize(("status", "kind", "allowed"), TABLE, ids=[f"{s}-{k.split('.')[1]}" for s, k, _ in TABLE])
def test_every_screen_offers_exactly_the_actions_the_state_allows(operator, status, kind, allowed):
    job = _job(status, kind)
    # the job's JSON
    assert set(operator.get(f"/api/jobs/{job.id}/").json()["actions"]) == allowed
    # the job page's buttons, as the server draws them (job.js redraws them from the JSON's "actions")
    assert _visible_forms(operator.get(f"/jobs/{job.id}/").content.decode()) == allowed
    # the admin's buttons
    admin_page = operator.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
    assert {action for action in ACTIONS if f"/admin/jobs/job/{job.id}/{action}/" in admin_page} == allowed
    # and what each action does: the API answers 200 only where it is allowed, and 409 elsewhere
    for action in ACTIONS:
        fresh = _job(status, kind)
        response = operator.post(f"/api/jobs/{fresh.id}/{action}/")
        assert response.status_code == (200 if action in allowed else 409), (action, response.content)
    # and the admin's bulk actions change a job only where it is allowed
    for action in ACTIONS:
        fresh = _job(status, kind)
        operator.post("/admin/jobs/job/", {"action": f"{action}_jobs", "_selected_action": [fresh.id]})
        fresh.refresh_from_db()
        assert (fresh.status != status) == (action in allowed), action
