from django.urls import path

from apps.webhooks import views

app_name = "webhooks"

urlpatterns = [
    path("", views.endpoint_list, name="list"),
    path("<int:endpoint_id>/", views.endpoint_edit, name="edit"),
]
