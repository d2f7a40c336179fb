"""Per-user limits: submissions per minute and jobs waiting at once, each refused with 429 and the JSON error (the
form shows the same message), staff and other users untouched; the count stays bounded by an index."""
import json
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from apps.jobs.models import Job, SubmissionAllowance

pytestmark = pytest.mark.django_db

NOOP = {"kind": "diagnostics.noop", "params": {}}


def _submit(client: Client, body: dict = NOOP):
    return client.post("/api/jobs/", data=json.dumps(body), content_type="application/json")


@override_settings(CONVEYOR_USER_SUBMISSIONS_PER_MINUTE=3, CONVEYOR_USER_JOBS_WAITING_MAX=0)
def test_past_the_rate_a_submission_answers_429_with_retry_after_and_records_nothing(api_client, user):
    assert [_submit(api_client).status_code for _ in range(3)] == [202, 202, 202]
    refused = _submit(api_client)
    assert refused.status_code == 429
    assert refused.json() == {
        "error": f"Too many submissions: an account may submit 3 jobs a minute. Try again in "
                 f"{refused['Retry-After']} seconds.",
        "fields": {},
    }
    # the bucket gives one submission back every 60 / 3 = 20 s
    assert 1 <= int(refused["Retry-After"]) <= 20
    assert Job.objects.filter(submitted_by=user).count() == 3


@override_settings(CONVEYOR_USER_SUBMISSIONS_PER_MINUTE=3, CONVEYOR_USER_JOBS_WAITING_MAX=0)
def test_the_rate_comes_back_as_time_passes(api_client, user):
    for _ in range(3):
        _submit(api_client)
    assert _submit(api_client).status_code == 429
    # when 20 s have passed (the bucket's time moved back by one step)
    SubmissionAllowance.objects.filter(user=user).update(full_at=SubmissionAllowance.objects.get(user=user).full_at
                                                         - timedelta(seconds=20))
    assert _submit(api_client).status_code == 202
    assert _submit(api_client).status_code == 429


@override_settings(CONVEYOR_USER_SUBMISSIONS_PER_MINUTE=2, CONVEYOR_USER_JOBS_WAITING_MAX=2)
def test_one_users_limits_leave_other_users_and_staff_alone(api_client, bearer_client, other_user, staff_user):
    for _ in range(2):
        _submit(api_client)
    assert _submit(api_client).status_code == 429
    assert _submit(bearer_client(other_user)).status_code == 202
    staff = bearer_client(staff_user)
    assert [_submit(staff).status_code for _ in range(5)] == [202] * 5


@override_settings(CONVEYOR_USER_SUBMISSIONS_PER_MINUTE=0, CONVEYOR_USER_JOBS_WAITING_MAX=2)
def test_past_the_waiting_limit_a_submission_answers_429_until_a_job_starts(api_client, user):
    queued = Job.objects.create(kind="diagnostics.noop", queue="default", status="queued", submitted_by=user)
    Job.objects.create(kind="diagnostics.noop", queue="default", status="retrying", submitted_by=user)
    Job.objects.create(kind="diagnostics.noop", queue="default", status="succeeded", submitted_by=user)
    refused = _submit(api_client)
    assert refused.status_code == 429 and "Retry-After" not in refused
    assert refused.json()["error"].startswith("You have 2 jobs waiting to run (queued, scheduled or retrying)")
    assert refused.json()["fields"] == {}
    # once one of them has started, there is room for one more
    Job.objects.filter(id=queued.id).update(status="running")
    assert _submit(api_client).status_code == 202
    assert _submit(api_client).status_code == 429


@override_settings(CONVEYOR_USER_SUBMISSIONS_PER_MINUTE=1, CONVEYOR_USER_JOBS_WAITING_MAX=0)
def test_the_job_form_shows_the_apis_message_as_a_form_error(signed_in, api_client):
    assert signed_in.post("/jobs/new/diagnostics.sleep/", {"seconds": "7"}).status_code == 302
    page = signed_in.post("/jobs/new/diagnostics.sleep/", {"seconds": "7"})
    assert page.status_code == 429 and 1 <= int(page["Retry-After"]) <= 60
    api_message = _submit(api_client).json()["error"]  # the same user, refused the same way
    html = page.content.decode()
    assert 'class="errorlist nonfield"' in html
    assert api_message.split(" Try again")[0] in html and 'value="7"' in html


@override_settings(CONVEYOR_USER_SUBMISSIONS_PER_MINUTE=60, CONVEYOR_USER_JOBS_WAITING_MAX=1000)
def test_the_check_is_one_statement_and_counts_waiting_jobs_in_their_index_up_to_the_limit(api_client):
    with CaptureQueriesContext(connection) as queries:
        assert _submit(api_client).status_code == 202
    [check] = [query["sql"] for query in queries if "jobs_submissionallowance" in query["sql"]]
    with transaction.atomic(), connection.cursor() as cursor:
        # a test database is too small for the planner to prefer any index: ask whether this one can serve
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {check}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "job_owner_waiting" in plan and "Limit" in plan, plan


@override_settings(CONVEYOR_SIGNUP_OPEN=False)
def test_a_closed_sign_up_says_so_and_creates_nothing(django_user_model):
    client = Client()
    page = client.get("/accounts/signup/")
    assert page.status_code == 200 and "Sign-up is closed" in page.content.decode()
    assert 'type="password"' not in page.content.decode()
    posted = client.post("/accounts/signup/", {"email": "eve@example.com", "password": "a-long-unusual-passphrase-71"})
    assert posted.status_code == 403 and "Sign-up is closed" in posted.content.decode()
    assert not django_user_model.objects.filter(email="eve@example.com").exists()
    assert not Job.objects.exists()
    # and the sign-in page no longer offers it
    sign_in = client.get("/accounts/login/").content.decode()
    assert "Sign in" in sign_in and "/accounts/signup/" not in sign_in


def test_an_open_sign_up_is_offered_on_the_sign_in_page():
    assert "/accounts/signup/" in Client().get("/accounts/login/").content.decode()
