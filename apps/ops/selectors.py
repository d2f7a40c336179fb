"""Reads for operations: is PostgreSQL answering, and every metric of GET /metrics."""
from django.db import connection
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from apps.jobs.models import Job
from apps.jobs.probes import queues_depth
from apps.jobs.selectors import jobs_outbox_count
from apps.jobs.tallies import DURATION_BUCKETS, LATENCY_BUCKETS, tallies_read


def database_status() -> str:
    """'ok', or why PostgreSQL did not answer."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure is the answer, not an error of the probe
        return f"unavailable: {exc.__class__.__name__}: {exc}".strip()
    return "ok"


def metrics_families() -> list[Metric]:
    """Every metric of GET /metrics, from the tallies PostgreSQL keeps (a few hundred rows, whatever the number
    of jobs), the outbox and RabbitMQ.

    Counters count what happened since the jobs were first recorded; they do not drop when old jobs are
    pruned. `conveyor_jobs` is a gauge of the jobs in each status now.
    """
    tallies = tallies_read()
    kinds = sorted({kind for kind, _ in tallies if kind})

    def value(kind: str, name: str) -> float:
        return tallies.get((kind, name), 0.0)

    def counter(name: str, documentation: str, tally: str | tuple[str, ...]) -> CounterMetricFamily:
        family = CounterMetricFamily(name, documentation, labels=["kind"])
        for kind in kinds:
            family.add_metric([kind], sum(value(kind, one) for one in ((tally,) if isinstance(tally, str) else tally)))
        return family

    current = GaugeMetricFamily("conveyor_jobs", "Jobs by kind and status now.", labels=["kind", "status"])
    for kind in kinds:
        for status in Job.Status.values:
            current.add_metric([kind, status], value(kind, f"status:{status}"))

    reconciled = CounterMetricFamily("conveyor_jobs_reconciled",
                                     "Jobs the reconciler dispatched again because their message was missing.")
    reconciled.add_metric([], value("", "reconciled"))

    outbox = GaugeMetricFamily("conveyor_outbox_backlog", "Jobs due for a message that is not published yet.")
    outbox.add_metric([], jobs_outbox_count())

    ready = GaugeMetricFamily("conveyor_queue_messages_ready", "Messages waiting in each queue.", labels=["queue"])
    unacked = GaugeMetricFamily("conveyor_queue_messages_unacknowledged",
                                "Messages delivered to workers, not yet acknowledged.", labels=["queue"])
    consumers = GaugeMetricFamily("conveyor_queue_consumers", "Consumers of each queue.", labels=["queue"])
    for queue in queues_depth():
        for family, count in ((ready, queue.ready), (unacked, queue.unacked), (consumers, queue.consumers)):
            if count is not None:
                family.add_metric([queue.name], count)

    return [
        counter("conveyor_jobs_submitted", "Jobs recorded, by kind.", "submitted"),
        counter("conveyor_jobs_succeeded", "Jobs that succeeded, by kind.", "finished:succeeded"),
        counter("conveyor_jobs_failed", "Attempts that ended in an error (retried, failed or lost), by kind.",
                ("attempt:retrying", "attempt:failed", "attempt:lost")),
        counter("conveyor_jobs_retried", "Attempts retried after a transient error, by kind.", "attempt:retrying"),
        counter("conveyor_jobs_dead", "Jobs that ended failed (their message dead-lettered), by kind.",
                "finished:failed"),
        counter("conveyor_jobs_lost", "Attempts whose worker died, by kind.", "attempt:lost"),
        reconciled,
        current,
        _histogram("conveyor_job_duration_seconds", "Run time of each finished attempt, by kind.", kinds, value,
                   "duration", DURATION_BUCKETS),
        _histogram("conveyor_job_start_latency_seconds", "From submission to the start of the first attempt, by kind.",
                   kinds, value, "latency", LATENCY_BUCKETS),
        outbox, ready, unacked, consumers,
    ]


def _histogram(name: str, documentation: str, kinds: list[str], value, tally: str,
               bounds: tuple[float, ...]) -> HistogramMetricFamily:
    """A cumulative histogram from the per-bucket tallies `<tally>:<i>` and `<tally>_sum`."""
    family = HistogramMetricFamily(name, documentation, labels=["kind"])
    for kind in kinds:
        counts, running = [], 0.0
        for index, bound in enumerate(bounds):
            running += value(kind, f"{tally}:{index}")
            counts.append((str(float(bound)), running))
        counts.append(("+Inf", running + value(kind, f"{tally}:{len(bounds)}")))
        family.add_metric([kind], counts, value(kind, f"{tally}_sum"))
    return family
