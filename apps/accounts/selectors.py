"""Reads of accounts: whether sign-up is open, users by email, and when a user's last verification email was asked
for."""
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from apps.jobs.models import Job

VERIFY_KIND = "accounts.send_verification_email"


def signup_open() -> bool:
    """Whether anyone may create an account (CONVEYOR_SIGNUP_OPEN); the sign-up page and user_signup both ask."""
    return settings.CONVEYOR_SIGNUP_OPEN


def user_with_email(*, email: str) -> AbstractBaseUser | None:
    return get_user_model().objects.filter(email__iexact=email).first()


def verification_last_requested_at(*, user: AbstractBaseUser) -> datetime | None:
    job = Job.objects.filter(kind=VERIFY_KIND, params__user=user.pk).order_by("-created_at").first()
    return job.created_at if job is not None else None
