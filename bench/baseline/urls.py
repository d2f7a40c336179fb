"""The baseline's views: publish a no-op task, bare or confirmed, and answer 202."""
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from bench.baseline.celery import noop_confirmed_task, noop_task


@csrf_exempt
def submit(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"id": noop_task.delay().id}, status=202)


@csrf_exempt
def submit_confirmed(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"id": noop_confirmed_task.delay().id}, status=202)


urlpatterns = [path("submit/", submit), path("submit/confirmed/", submit_confirmed)]
