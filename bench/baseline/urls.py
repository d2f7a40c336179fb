"""The baseline's one view: publish a no-op task without a confirm and answer 202."""
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from bench.baseline.celery import noop_task


@csrf_exempt
def submit(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"id": noop_task.delay().id}, status=202)


urlpatterns = [path("submit/", submit)]
