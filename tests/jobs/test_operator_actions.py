"""Operator actions are recorded in Django's admin log with who and when, wherever they are done (admin buttons,
bulk actions and re-drive, the job pages, the JSON API); a staff user with only the view permission on jobs
sees the console but acts on nothing but their own jobs. The state rule (lifecycle.job_actions) and the
permission rule (selectors.job_action_permitted) are checked apart and together."""
from datetime import timedelta

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from apps.jobs.models import Job
from config import broker
from config.celery import app as celery_app
from tests.jobs.test_actions import ACTIONS, TABLE, _visible_forms
from tests.processes import queues_reset

pytestmark = pytest.mark.django_db


def _job(status: str = "failed", kind: str = "diagnostics.noop", **fields) -> Job:
    return Job.objects.create(kind=kind, queue="default", status=status, params={"seconds": 1}, **fields)


def _staff(django_user_model, username: str, *permissions: str):
    user = django_user_model.objects.create_user(username, password=f"{username}-pass-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="jobs", codename__in=permissions))
    return user


def _signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _log(job: Job) -> list[LogEntry]:
    return list(LogEntry.objects.filter(object_id=str(job.id)).order_by("action_time"))


def _recorded(job: Job, *, user, message: str) -> bool:
    """The job's one admin-log entry names `user`, a change, `message`, and a time within the last minute."""
    [entry] = _log(job)
    return (entry.user_id == user.pk and entry.action_flag == CHANGE and entry.get_change_message() == message
            and timezone.now() - timedelta(minutes=1) < entry.action_time <= timezone.now())


@pytest.fixture
def operator(django_user_model):
    return _staff(django_user_model, "olga", "view_job", "change_job")


@pytest.fixture
def viewer(django_user_model):
    return _staff(django_user_model, "vera", "view_job")


# --- the admin log, wherever the action is done ---------------------------------------------------------


def test_a_retry_through_the_api_is_recorded_with_who_and_when(operator, bearer_client):
    job = _job("failed")
    assert bearer_client(operator).post(f"/api/jobs/{job.id}/retry/").status_code == 200
    assert _recorded(job, user=operator, message="retry: failed → queued")


def test_an_owner_cancelling_their_own_job_on_its_page_is_recorded(user, signed_in):
    job = _job("queued", submitted_by=user)
    assert signed_in.post(f"/jobs/{job.id}/cancel/").status_code == 302
    assert _recorded(job, user=user, message="cancel: queued → cancelled")


def test_the_admin_buttons_and_bulk_actions_record_each_job(operator):
    client = _signed_in(operator)
    button, first, second = _job("failed"), _job("queued"), _job("retrying")
    client.post(f"/admin/jobs/job/{button.id}/retry/")
    client.post("/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [first.id, second.id]})
    assert _recorded(button, user=operator, message="retry: failed → queued")
    assert _recorded(first, user=operator, message="cancel: queued → cancelled")
    assert _recorded(second, user=operator, message="cancel: retrying → cancelled")
    # and the job's History page in the admin shows who did it
    history = client.get(f"/admin/jobs/job/{button.id}/history/").content.decode()
    assert "olga" in history and "retry: failed → queued" in history


def test_an_action_refused_by_the_state_records_nothing(operator, bearer_client):
    job = _job("succeeded")
    assert bearer_client(operator).post(f"/api/jobs/{job.id}/retry/").status_code == 409
    assert _log(job) == []


def _dead_letter_put(job: Job) -> None:
    """A message of `job` in the dead queue, as RabbitMQ dead-letters one."""
    with celery_app.connection_for_write() as connection:
        queue = broker.dead_queue()(connection.default_channel)
        message = celery_app.amqp.create_task_message(
            str(job.id), "diagnostics.noop", (), {"job_id": str(job.id), "generation": job.generation})
        celery_app.amqp.send_task_message(connection.Producer(), "diagnostics.noop", message, queue=queue,
                                          retry=False)


@pytest.mark.integration
def test_a_redrive_from_the_admin_or_the_command_records_each_job_with_its_operator(operator):
    queues_reset("dead")
    by_button, by_command = _job("failed"), _job("failed")
    _dead_letter_put(by_button)
    response = _signed_in(operator).post("/admin/jobs/job/redrive/", follow=True)
    assert "Re-drove 1 job(s)" in response.content.decode()
    assert _recorded(by_button, user=operator, message="re-drive from the dead queue")
    _dead_letter_put(by_command)
    call_command("redrive_dead_letters", "--user", "olga")
    assert _recorded(by_command, user=operator, message="re-drive from the dead queue")


# --- a staff user with only the view permission ---------------------------------------------------------


def test_a_viewer_sees_the_console_without_any_way_to_act(viewer):
    client = _signed_in(viewer)
    job = _job("failed")
    listing = client.get("/admin/jobs/job/")
    assert listing.status_code == 200 and str(job.id)[:8] in listing.content.decode()
    assert "retry_jobs" not in listing.content.decode() and "Re-drive dead queue" not in listing.content.decode()
    change = client.get(f"/admin/jobs/job/{job.id}/change/")
    assert change.status_code == 200 and f"/admin/jobs/job/{job.id}/retry/" not in change.content.decode()
    assert client.get("/admin/jobs/job/dashboard/").status_code == 200
    page = client.get(f"/jobs/{job.id}/")
    assert page.status_code == 200 and _visible_forms(page.content.decode()) == set()


def test_every_action_a_viewer_posts_answers_403_and_changes_nothing(viewer, bearer_client):
    client, job = _signed_in(viewer), _job("failed")
    queued = _job("queued")
    assert client.post(f"/admin/jobs/job/{job.id}/retry/").status_code == 403
    assert client.post(f"/admin/jobs/job/{queued.id}/cancel/").status_code == 403
    assert client.post("/admin/jobs/job/", {"action": "retry_jobs", "_selected_action": [job.id]}).status_code == 403
    assert client.post("/admin/jobs/job/redrive/").status_code == 403
    assert client.post(f"/jobs/{job.id}/retry/").status_code == 403
    response = bearer_client(viewer).post(f"/api/jobs/{job.id}/retry/")
    assert response.status_code == 403
    assert set(response.json()) == {"error", "fields"} and "permission to change jobs" in response.json()["error"]
    assert Job.objects.get(id=job.id).status == "failed" and Job.objects.get(id=queued.id).status == "queued"
    assert not LogEntry.objects.exists()


def test_staff_without_the_view_permission_cannot_open_the_dashboard(django_user_model):
    nobody = _staff(django_user_model, "nina")
    assert _signed_in(nobody).get("/admin/jobs/job/dashboard/").status_code == 403


def test_a_viewer_still_acts_on_their_own_jobs(viewer, bearer_client):
    own = _job("queued", submitted_by=viewer)
    response = bearer_client(viewer).post(f"/api/jobs/{own.id}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert _recorded(own, user=viewer, message="cancel: queued → cancelled")


@pytest.mark.parametrize(("status", "kind", "allowed"), TABLE, ids=[f"{s}-{k.split('.')[1]}" for s, k, _ in TABLE])
def test_the_state_decides_which_actions_exist_and_the_permission_whether_this_user_may_take_them(
        operator, viewer, bearer_client, status, kind, allowed):
    job = _job(status, kind)
    for user, may_act in ((operator, True), (viewer, False)):
        offered = allowed if may_act else set()
        api, pages = bearer_client(user), _signed_in(user)
        assert set(api.get(f"/api/jobs/{job.id}/").json()["actions"]) == offered
        assert _visible_forms(pages.get(f"/jobs/{job.id}/").content.decode()) == offered
        admin_page = pages.get(f"/admin/jobs/job/{job.id}/change/").content.decode()
        assert {action for action in ACTIONS if f"/admin/jobs/job/{job.id}/{action}/" in admin_page} == offered
        for action in ACTIONS:
            fresh = _job(status, kind)
            expected = (200 if action in allowed else 409) if may_act else 403
            assert api.post(f"/api/jobs/{fresh.id}/{action}/").status_code == expected, (user.username, action)
