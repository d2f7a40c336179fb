"""Notifications: email for job kinds to send, with SMTP failures sorted into retryable and permanent."""
from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "apps.notifications"
    label = "notifications"
