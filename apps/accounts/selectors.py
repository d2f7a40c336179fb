"""Reads of accounts: users by email."""
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser


def user_with_email(*, email: str) -> AbstractBaseUser | None:
    return get_user_model().objects.filter(email__iexact=email).first()
