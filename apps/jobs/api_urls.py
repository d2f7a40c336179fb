from django.urls import path

from apps.jobs import api

app_name = "api"

urlpatterns = [
    path("jobs/", api.jobs, name="jobs"),
    path("jobs/<uuid:job_id>/", api.job_detail, name="job"),
    path("jobs/<uuid:job_id>/retry/", api.job_retry, name="job-retry"),
    path("jobs/<uuid:job_id>/cancel/", api.job_cancel, name="job-cancel"),
    path("kinds/", api.kinds, name="kinds"),
    path("schema/", api.schema, name="schema"),
]
