"""Webhooks: endpoints their owners register, and the job kind that delivers signed events to them."""
from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "apps.webhooks"
    label = "webhooks"
