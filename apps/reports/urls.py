from django.urls import path

from apps.reports import views

app_name = "reports"

urlpatterns = [
    path("new/", views.report_new, name="new"),
    path("<uuid:job_id>/result.csv", views.report_download, name="download"),
]
