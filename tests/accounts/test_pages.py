"""Sign-up, verification and resend pages: their rules and messages, without sending mail."""
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.accounts.services import verification_token_make
from apps.jobs.models import Job

pytestmark = pytest.mark.django_db

KIND = "accounts.send_verification_email"
PASSWORD = "a-long-unusual-passphrase-71"


def test_signup_creates_an_inactive_user_and_one_email_job():
    response = Client().post("/accounts/signup/", {"email": "Eve@Example.com", "password": PASSWORD})
    assert response.status_code == 200
    user = get_user_model().objects.get(email="eve@example.com")
    assert not user.is_active
    assert Job.objects.get(kind=KIND).params == {"user": user.pk}


def test_signup_refuses_a_weak_password_with_djangos_validators():
    response = Client().post("/accounts/signup/", {"email": "eve@example.com", "password": "password"})
    assert "This password is too common." in response.content.decode()
    assert not get_user_model().objects.exists()


def test_signup_refuses_an_email_that_has_an_account(user):
    user.email = "alice@example.com"
    user.save()
    response = Client().post("/accounts/signup/", {"email": "ALICE@example.com", "password": PASSWORD})
    assert "An account with this email exists" in response.content.decode()


def test_resend_is_throttled_with_a_clear_message(settings):
    settings.CONVEYOR_VERIFICATION_RESEND_SECONDS = 60
    client = Client()
    client.post("/accounts/signup/", {"email": "eve@example.com", "password": PASSWORD})
    response = client.post("/accounts/verify/resend/", {"email": "eve@example.com"})
    assert "less than 60 seconds ago" in response.content.decode()
    assert Job.objects.filter(kind=KIND).count() == 1
    settings.CONVEYOR_VERIFICATION_RESEND_SECONDS = 0
    response = client.post("/accounts/verify/resend/", {"email": "eve@example.com"})
    assert response.status_code == 302
    assert Job.objects.filter(kind=KIND).count() == 2


def test_an_expired_link_says_so_and_offers_a_new_one(settings, django_user_model):
    user = django_user_model.objects.create_user("eve@example.com", email="eve@example.com", is_active=False)
    token = verification_token_make(user=user)
    settings.CONVEYOR_VERIFICATION_MAX_AGE = -1
    response = Client().get(f"/accounts/verify/{token}/")
    assert response.status_code == 400
    assert "This verification link has expired" in response.content.decode()
    user.refresh_from_db()
    assert not user.is_active


def test_a_tampered_link_is_refused():
    response = Client().get("/accounts/verify/not-a-real-token/")
    assert response.status_code == 400 and "not valid" in response.content.decode()
