"""Accounts: sign-up with email verification; the account stays inactive until its link is followed."""
from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"
