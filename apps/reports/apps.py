"""Reports: CSV summaries computed on their own queue, streamed so any file fits in little memory."""
from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "apps.reports"
    label = "reports"
