"""Top-level URLs: probes, pages, the JSON API and the admin."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from apps.accounts.views import SignInView

urlpatterns = [
    path("", include("apps.ops.urls")),
    path("accounts/login/", SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("apps.accounts.urls")),
    path("jobs/", include("apps.jobs.urls")),
    path("api/", include("apps.jobs.api_urls")),
    path("webhooks/", include("apps.webhooks.urls")),
    path("reports/", include("apps.reports.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "apps.jobs.api.not_found"
handler500 = "apps.jobs.api.server_error"
