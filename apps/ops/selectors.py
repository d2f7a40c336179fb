"""Reads about the services Conveyor depends on (health, RabbitMQ's queues, Celery's workers) and metrics."""
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests
from django.conf import settings
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from apps.jobs.models import Job, JobAttempt
from config import broker
from config.celery import app as celery_app

# A probe must answer quickly even when a dependency hangs.
PROBE_TIMEOUT_SECONDS = 2


def database_status() -> str:
    """'ok', or why PostgreSQL did not answer."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure is the answer, not an error of the probe
        return f"unavailable: {exc.__class__.__name__}: {exc}".strip()
    return "ok"


def broker_status() -> str:
    """'ok', or why RabbitMQ did not answer."""
    try:
        with celery_app.connection_for_read(connect_timeout=PROBE_TIMEOUT_SECONDS) as conn:
            conn.connect()
    except Exception as exc:
        return f"unavailable: {exc.__class__.__name__}: {exc}".strip()
    return "ok"


@dataclass(frozen=True)
class QueueDepth:
    name: str
    ready: int | None
    # Delivered to a worker and not acknowledged yet; only RabbitMQ's management API knows it.
    unacked: int | None
    consumers: int | None


def queues_depth() -> list[QueueDepth]:
    """Each job queue and the dead queue, as RabbitMQ counts them now; None where it did not say.

    From the management API (CONVEYOR_BROKER_API) when set, else from a passive declare over AMQP,
    which knows only ready messages and consumers.
    """
    names = [broker.queue_name(name) for name in settings.CONVEYOR_QUEUES] + [broker.dead_queue().name]
    if settings.CONVEYOR_BROKER_API:
        try:
            return [_queue_depth_from_api(name) for name in names]
        except (requests.RequestException, ValueError, KeyError):
            pass  # the management API is optional: fall back to AMQP
    depths = []
    try:
        with celery_app.connection_for_read(connect_timeout=PROBE_TIMEOUT_SECONDS) as connection:
            channel = connection.default_channel
            for name in names:
                try:
                    _, ready, consumers = channel.queue_declare(queue=name, passive=True)
                except Exception:  # not declared yet: a passive declare closes the channel
                    channel = connection.channel()
                    depths.append(QueueDepth(name=name, ready=None, unacked=None, consumers=None))
                else:
                    depths.append(QueueDepth(name=name, ready=ready, unacked=None, consumers=consumers))
    except Exception:  # the broker is down: every number is unknown
        return [QueueDepth(name=name, ready=None, unacked=None, consumers=None) for name in names]
    return depths


def _queue_depth_from_api(name: str) -> QueueDepth:
    url = urlsplit(settings.CONVEYOR_BROKER_API)
    vhost = quote(urlsplit(settings.CELERY_BROKER_URL).path[1:] or "/", safe="")
    base = urlunsplit((url.scheme, url.hostname + (f":{url.port}" if url.port else ""), url.path, "", ""))
    response = requests.get(
        f"{base.rstrip('/')}/queues/{vhost}/{quote(name, safe='')}",
        auth=(unquote(url.username or ""), unquote(url.password or "")),
        timeout=PROBE_TIMEOUT_SECONDS,
    )
    if response.status_code == 404:
        return QueueDepth(name=name, ready=None, unacked=None, consumers=None)
    response.raise_for_status()
    data = response.json()
    return QueueDepth(
        name=name, ready=data["messages_ready"], unacked=data["messages_unacknowledged"], consumers=data["consumers"]
    )


def workers_active() -> dict[str, list[dict]]:
    """Workers that answered Celery's control API within the probe timeout, each with its running tasks."""
    try:
        answers = celery_app.control.inspect(timeout=PROBE_TIMEOUT_SECONDS / 2).active()
    except Exception:  # the broker is down: no worker can answer
        return {}
    return dict(sorted((answers or {}).items()))


# Histogram buckets, in seconds: from a no-op job to a long report.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def metrics_families() -> list[Metric]:
    """Every metric of GET /metrics, computed now from the job tables and RabbitMQ.

    Counters are counts of rows (jobs, attempts), so they only grow while jobs are kept; deleting
    old jobs looks like a counter reset to Prometheus, which rate() handles.
    """
    by_kind_status = Job.objects.values_list("kind", "status").annotate(count=Count("id")).order_by()
    submitted = CounterMetricFamily("conveyor_jobs_submitted", "Jobs recorded, by kind.", labels=["kind"])
    succeeded = CounterMetricFamily("conveyor_jobs_succeeded", "Jobs that succeeded, by kind.", labels=["kind"])
    dead = CounterMetricFamily(
        "conveyor_jobs_dead", "Jobs that ended failed (their message dead-lettered), by kind.", labels=["kind"]
    )
    current = GaugeMetricFamily("conveyor_jobs", "Jobs by kind and status now.", labels=["kind", "status"])
    totals: dict[str, dict[str, int]] = {}
    for kind, status, count in by_kind_status:
        totals.setdefault(kind, {})[status] = count
        current.add_metric([kind, status], count)
    for kind, statuses in sorted(totals.items()):
        submitted.add_metric([kind], sum(statuses.values()))
        succeeded.add_metric([kind], statuses.get(Job.Status.SUCCEEDED, 0))
        dead.add_metric([kind], statuses.get(Job.Status.FAILED, 0))

    outcomes = JobAttempt.objects.values_list("job__kind", "outcome").annotate(count=Count("id")).order_by()
    failed = CounterMetricFamily(
        "conveyor_jobs_failed", "Attempts that ended in an error (retried, failed or lost), by kind.", labels=["kind"]
    )
    retried = CounterMetricFamily("conveyor_jobs_retried", "Attempts retried after a transient error, by kind.",
                                  labels=["kind"])
    errors: dict[str, int] = {}
    retries: dict[str, int] = {}
    error_outcomes = {JobAttempt.Outcome.RETRYING, JobAttempt.Outcome.FAILED, JobAttempt.Outcome.LOST}
    for kind, outcome, count in outcomes:
        errors[kind] = errors.get(kind, 0) + (count if outcome in error_outcomes else 0)
        retries[kind] = retries.get(kind, 0) + (count if outcome == JobAttempt.Outcome.RETRYING else 0)
    for kind in sorted(errors):
        failed.add_metric([kind], errors[kind])
        retried.add_metric([kind], retries[kind])

    finished_attempts = JobAttempt.objects.filter(finished_at__isnull=False)
    duration = _histogram(
        "conveyor_job_duration_seconds", "Run time of each finished attempt, by kind.",
        finished_attempts.annotate(seconds=ExpressionWrapper(F("finished_at") - F("started_at"),
                                                             output_field=DurationField())),
        DURATION_BUCKETS,
    )
    latency = _histogram(
        "conveyor_job_start_latency_seconds", "From submission to the start of the first attempt, by kind.",
        JobAttempt.objects.filter(number=1).annotate(
            seconds=ExpressionWrapper(F("started_at") - F("job__created_at"), output_field=DurationField())
        ),
        LATENCY_BUCKETS,
    )

    outbox = GaugeMetricFamily("conveyor_outbox_backlog", "Jobs recorded but not yet confirmed by RabbitMQ.")
    outbox.add_metric([], Job.objects.filter(status=Job.Status.QUEUED, published_at__isnull=True).count())

    ready = GaugeMetricFamily("conveyor_queue_messages_ready", "Messages waiting in each queue.", labels=["queue"])
    unacked = GaugeMetricFamily("conveyor_queue_messages_unacknowledged",
                                "Messages delivered to workers, not yet acknowledged.", labels=["queue"])
    consumers = GaugeMetricFamily("conveyor_queue_consumers", "Consumers of each queue.", labels=["queue"])
    for queue in queues_depth():
        for family, value in ((ready, queue.ready), (unacked, queue.unacked), (consumers, queue.consumers)):
            if value is not None:
                family.add_metric([queue.name], value)

    return [submitted, succeeded, failed, retried, dead, current, duration, latency, outbox, ready, unacked, consumers]


def _histogram(name: str, documentation: str, rows: QuerySet, buckets: tuple[float, ...]) -> HistogramMetricFamily:
    """A cumulative histogram of the `seconds` annotation of `rows`, per job kind, counted in SQL."""
    bounds = {f"le_{index}": Count("id", filter=Q(seconds__lte=timedelta(seconds=bound)))
              for index, bound in enumerate(buckets)}
    family = HistogramMetricFamily(name, documentation, labels=["kind"])
    for row in rows.values("job__kind").annotate(count=Count("id"), total=Sum("seconds"), **bounds).order_by():
        counts = [(str(float(bound)), row[f"le_{index}"]) for index, bound in enumerate(buckets)]
        counts.append(("+Inf", row["count"]))
        total = row["total"].total_seconds() if row["total"] is not None else 0.0
        family.add_metric([row["job__kind"]], counts, total)
    return family
