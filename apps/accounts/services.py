"""Writes for accounts: sign up (inactive, with a verification email job), verify, resend, and the email itself."""
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse

from apps.accounts import selectors
from apps.accounts.selectors import VERIFY_KIND
from apps.jobs.errors import JobParamsInvalid, PermanentJobError, SubmissionRefused
from apps.jobs.services import job_submit
from apps.notifications.services import email_send

VERIFY_SALT = "accounts.verify"


class VerificationFailed(Exception):
    """The link cannot verify an account; the message says why and what to do."""


class ResendRefused(Exception):
    """A new verification email cannot be sent now; the message says when it can."""


SIGNUP_CLOSED = "Sign-up is closed: new accounts are created by an administrator, so ask yours for one."


class SignupClosed(Exception):
    """Sign-up is closed (CONVEYOR_SIGNUP_OPEN); the message says what to do instead."""


def user_signup(*, email: str, password: str) -> AbstractBaseUser:
    """Create an inactive user and, in the same transaction, the job that emails its link; SignupClosed, creating
    nothing, while sign-up is closed."""
    if not selectors.signup_open():
        raise SignupClosed(SIGNUP_CLOSED)
    with transaction.atomic():
        user = get_user_model().objects.create_user(username=email, email=email, password=password, is_active=False)
        job_submit(kind=VERIFY_KIND, params={"user": user.pk}, submitted_by=user)
    return user


def verification_token_make(*, user: AbstractBaseUser) -> str:
    """A signed, timestamped token naming the user and the email it was sent to."""
    return signing.dumps({"user": user.pk, "email": user.email}, salt=VERIFY_SALT)


def user_verify(*, token: str) -> AbstractBaseUser:
    """Activate the user the token names; VerificationFailed if it is expired, forged or used."""
    try:
        data = signing.loads(token, salt=VERIFY_SALT, max_age=settings.CONVEYOR_VERIFICATION_MAX_AGE)
    except signing.SignatureExpired:
        raise VerificationFailed("This verification link has expired; ask for a new one below.") from None
    except signing.BadSignature:
        raise VerificationFailed("This verification link is not valid; copy the whole link from the email.") from None
    user = get_user_model().objects.filter(pk=data["user"], email=data["email"]).first()
    if user is None:
        raise VerificationFailed("The account this link verifies no longer exists; sign up again.")
    if user.is_active:
        # One use only: a link left in a mailbox must not sign anyone in later.
        raise VerificationFailed("This link was used already; the account is verified, so sign in with your password.")
    user.is_active = True
    user.save(update_fields=["is_active"])
    return user


def verification_resend(*, email: str) -> AbstractBaseUser | None:
    """Queue a new verification email for an unverified account; None if there is none with this email.

    ResendRefused when one was sent too recently (the kind's form holds the throttle).
    """
    user = selectors.user_with_email(email=email)
    if user is None or user.is_active:
        return None
    try:
        job_submit(kind=VERIFY_KIND, params={"user": user.pk}, submitted_by=user)
    except JobParamsInvalid as exc:
        raise ResendRefused(" ".join(message for messages in exc.errors.values() for message in messages)) from None
    except SubmissionRefused as exc:  # the account's own limits: asked for too often
        raise ResendRefused(str(exc)) from None
    return user


def verification_email_send(*, user_id: int) -> dict:
    """Email the user a fresh signed link that activates the account; nothing to do once verified."""
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        raise PermanentJobError(f"User {user_id} no longer exists; there is no one to verify.")
    if user.is_active:
        return {"sent": False, "reason": "The account is verified already."}
    link = settings.CONVEYOR_SITE_URL.rstrip("/") + reverse(
        "accounts:verify", args=[verification_token_make(user=user)]
    )
    context = {"link": link, "hours": settings.CONVEYOR_VERIFICATION_MAX_AGE // 3600}
    email_send(
        to=user.email,
        subject="Verify your email for Conveyor",
        body=render_to_string("accounts/verification_email.txt", context),
    )
    return {"sent": True, "to": user.email}
