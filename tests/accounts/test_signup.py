"""Sign-up sends a verification email through a real SMTP server; its link activates and signs in."""
import re
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.jobs.models import Job
from tests.processes import job_finished, wait_until

pytestmark = pytest.mark.integration

KIND = "accounts.send_verification_email"


def signup(client: Client, email: str = "dana@example.com") -> Job:
    response = client.post("/accounts/signup/", {"email": email, "password": "a-long-unusual-passphrase-71"})
    assert response.status_code == 200 and "Check your email" in response.content.decode()
    return Job.objects.get(kind=KIND)


def test_signup_emails_a_link_that_activates_the_account_and_signs_in(email_worker, mail_server):
    client = Client()
    job = signup(client)
    user = get_user_model().objects.get(email="dana@example.com")
    assert not user.is_active
    wait_until(lambda: mail_server.received, timeout=30, what="the verification email")
    message = mail_server.received[0]
    assert message["To"] == "dana@example.com"
    link = re.search(r"https?://\S+/accounts/verify/\S+/", message.get_payload()).group(0)
    response = client.get(urlsplit(link).path)
    assert response.status_code == 302 and response.url == "/jobs/"
    user.refresh_from_db()
    assert user.is_active
    assert client.get("/jobs/").status_code == 200  # signed in
    assert wait_until(lambda: job_finished(job), timeout=10, what="the job").status == Job.Status.SUCCEEDED
    # the link works once only
    assert "used already" in client.get(urlsplit(link).path).content.decode()


def test_451_twice_then_accepted_is_sent_on_attempt_3(email_worker, mail_server):
    mail_server.replies[:] = ["451 4.3.0 Try again later", "451 4.3.0 Try again later"]
    job = signup(Client())
    job = wait_until(lambda: job_finished(job), timeout=30, what="the email job")
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 3
    assert len(mail_server.received) == 1
    assert "451 4.3.0 Try again later" in job.attempt_set.get(number=1).error


def test_550_fails_at_once_with_the_servers_reply(email_worker, mail_server):
    mail_server.replies[:] = ["550 5.1.1 No such mailbox here"]
    job = signup(Client())
    job = wait_until(lambda: job_finished(job), timeout=30, what="the email job")
    assert job.status == Job.Status.FAILED and job.attempts == 1
    assert job.error == "PermanentJobError: The mail server refused the message: 550 5.1.1 No such mailbox here"
