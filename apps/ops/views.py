"""Liveness and readiness probes for load balancers and orchestrators; metrics for Prometheus."""
import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from apps.jobs.probes import broker_nodes_status, broker_status
from apps.ops.selectors import database_status, metrics_families


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    nodes = broker_nodes_status()
    checks: dict[str, str | dict[str, str]] = {"database": database_status(), "broker": broker_status(nodes)}
    if len(nodes) > 1:
        checks["broker_nodes"] = nodes  # a cluster: ready while any node answers, and which ones do
    ready = checks["database"] == "ok" and checks["broker"] == "ok"
    return JsonResponse(checks, status=200 if ready else 503)


class _MetricsNow:
    """A collector that computes every metric when Prometheus scrapes, from the tables and RabbitMQ."""

    def collect(self):
        return metrics_families()


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.CONVEYOR_METRICS_TOKEN
    if not token:
        return HttpResponse("Metrics are off: set CONVEYOR_METRICS_TOKEN, then send it as a bearer token.",
                            status=403, content_type="text/plain")
    if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
        response = HttpResponse("Send 'Authorization: Bearer <CONVEYOR_METRICS_TOKEN>'.", status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = "Bearer"
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_MetricsNow())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
