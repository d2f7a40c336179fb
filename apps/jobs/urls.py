from django.urls import path

from apps.jobs import views

app_name = "jobs"

urlpatterns = [
    path("", views.job_list, name="list"),
    path("new/", views.job_kind_pick, name="new"),
    path("new/<str:kind>/", views.job_new, name="new-kind"),
    path("<uuid:job_id>/", views.job_detail, name="detail"),
    path("<uuid:job_id>/retry/", views.job_retry, name="retry"),
    path("<uuid:job_id>/cancel/", views.job_cancel, name="cancel"),
]
