"""The lifeline: find jobs whose state promises a message that RabbitMQ no longer holds, and put them back in
the outbox; and prune finished jobs past their retention, with their attempts and files.

A message can go missing after the relay published it: a queue purged or deleted, a message dead-lettered by
RabbitMQ's own delivery limit, a node lost with its data. Nothing else would notice, so every
CONVEYOR_RECONCILE_INTERVAL_SECONDS one pass, in one relay process at a time, looks for
- jobs waiting (Job.WAITING) that were published over CONVEYOR_RECONCILE_AFTER_SECONDS ago and never
  started, in a queue that holds fewer messages than it has such jobs: the oldest of them, up to the
  shortfall, are dispatched again (a queue drained slowly by its workers holds a message for each, and is
  left alone);
- jobs running more than CONVEYOR_RECONCILE_AFTER_SECONDS past their kind's hard time limit with no live
  attempt (no worker holds their lock): their worker died and their message is gone too.
Either goes back to the outbox, where the relay dispatches it with a new generation, so it can never run twice
at once: a late copy of its old message is dropped by the fence. At most CONVEYOR_RECONCILE_BATCH_SIZE a
pass; each is logged, and counted on the dashboard and in /metrics.
"""
import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import Error, connection, transaction
from django.utils import timezone

from apps.jobs import lifecycle, probes
from apps.jobs.errors import UnknownKind
from apps.jobs.models import Job
from apps.jobs.registry import kind_get, kinds_all
from apps.jobs.tallies import tallies_snapshot, tally_add

logger = logging.getLogger(__name__)

# Advisory lock held for a pass: one lifeline pass at a time over a database, however many relays run.
LIFELINE_LOCK = 0x6C6966656C696E65  # "lifeline"
# Seconds between two looks at the clock for the minute's tally snapshot.
SNAPSHOT_CHECK_SECONDS = 10


@dataclass(frozen=True)
class LifelinePass:
    redispatched: int  # jobs put back in the outbox
    pruned: int  # finished jobs deleted for their age


def reconcile(*, now: datetime | None = None) -> int:
    """Put back in the outbox the jobs whose message is missing (see the module); how many."""
    now = now or timezone.now()
    after = timedelta(seconds=settings.CONVEYOR_RECONCILE_AFTER_SECONDS)
    budget = settings.CONVEYOR_RECONCILE_BATCH_SIZE
    moved = 0
    for queue in probes.queues_depth(names=_job_queues()):
        if queue.ready is None or budget - moved <= 0:
            continue  # RabbitMQ did not say: nothing can be concluded
        held = queue.ready + (queue.unacked or 0)
        waiting = Job.objects.filter(queue=queue.queue, status__in=Job.WAITING, published_at__isnull=False)
        shortfall = waiting[: held + budget - moved].count() - held
        if shortfall <= 0:
            continue
        stale = waiting.filter(published_at__lt=now - after).order_by("published_at")
        ids = list(stale.values_list("id", flat=True)[: min(shortfall, budget - moved)])
        found = lifecycle.jobs_redispatch(job_ids=ids, statuses=Job.WAITING, published_before=now - after)
        _log(found, f"waiting in queue {queue.queue} whose messages are missing ({queue.queue} holds {held} "
                    f"messages for {held + shortfall} published jobs)")
        moved += found
    moved += _reconcile_running(now=now, after=after, budget=budget - moved)
    if moved:
        tally_add(kind="", name="reconciled", delta=moved)
    return moved


def _reconcile_running(*, now: datetime, after: timedelta, budget: int) -> int:
    if budget <= 0:
        return 0
    shortest = min([_hard_limit(kind) for kind in _job_kinds()] + [settings.CELERY_TASK_TIME_LIMIT])
    candidates = Job.objects.filter(status=Job.Status.RUNNING, started_at__lt=now - after - timedelta(seconds=shortest))
    rows = list(candidates.order_by("started_at").values_list("id", "kind", "started_at")[: budget * 4])
    overdue = [job_id for job_id, kind, started in rows if started < now - after - timedelta(seconds=_hard_limit(kind))]
    alive = lifecycle.jobs_alive(job_ids=overdue)
    lost = [job_id for job_id in overdue if job_id not in alive][:budget]
    found = 0
    for job_id, _, started in (row for row in rows if row[0] in lost):
        found += lifecycle.jobs_redispatch(job_ids=[job_id], statuses=[Job.Status.RUNNING],
                                           started_before=started + timedelta(microseconds=1))
    _log(found, "running past their hard time limit with no live attempt")
    return found


def _log(count: int, what: str) -> None:
    if count:
        logger.warning("Reconciler: %d job(s) %s; dispatched again", count, what)


def _hard_limit(kind_name: str) -> int:
    try:
        kind = kind_get(kind_name)
    except UnknownKind:
        return settings.CELERY_TASK_TIME_LIMIT
    return kind.time_limit or settings.CELERY_TASK_TIME_LIMIT


def _job_kinds() -> list[str]:
    return [kind.name for kind in kinds_all()]


def _job_queues() -> list[str]:
    return sorted({*settings.CONVEYOR_QUEUES, *(kind.queue for kind in kinds_all())})


def jobs_prune(*, now: datetime | None = None) -> int:
    """Delete up to CONVEYOR_RETENTION_BATCH_SIZE jobs finished more than CONVEYOR_JOB_RETENTION_DAYS ago, oldest
    first, with their attempts (and each kind's own rows) and the files their kind stored; how many."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.CONVEYOR_JOB_RETENTION_DAYS)
    expired = Job.objects.filter(status__in=Job.FINISHED, finished_at__lt=cutoff).order_by("finished_at")
    jobs = list(expired.only("id", "kind", "params")[: settings.CONVEYOR_RETENTION_BATCH_SIZE])
    if not jobs:
        return 0
    names = [name for job in jobs for name in _files_of(job)]
    with transaction.atomic():
        Job.objects.filter(id__in=[job.id for job in jobs]).delete()
    for name in names:  # after the rows: a file is never gone while its job still shows it
        default_storage.delete(name)
    logger.info("Retention: pruned %d job(s) finished before %s, and %d file(s)", len(jobs), cutoff, len(names))
    return len(jobs)


def _files_of(job: Job) -> list[str]:
    try:
        kind = kind_get(job.kind)
    except UnknownKind:
        return []
    return kind.files(job) if kind.files is not None else []


def lifeline_pass() -> LifelinePass:
    """One reconcile, one prune batch and the minute's tally snapshot, unless another relay's lifeline is
    running a pass now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [LIFELINE_LOCK])
        if not cursor.fetchone()[0]:
            return LifelinePass(redispatched=0, pruned=0)
        try:
            return LifelinePass(redispatched=reconcile(), pruned=jobs_prune())
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [LIFELINE_LOCK])


def lifeline_thread_start() -> threading.Thread:
    """Run the lifeline in a daemon thread (its own connection): a pass every CONVEYOR_RECONCILE_INTERVAL_SECONDS,
    and the minute's tally snapshot for the dashboard every SNAPSHOT_CHECK_SECONDS (once a minute is kept)."""

    def run() -> None:
        interval = settings.CONVEYOR_RECONCILE_INTERVAL_SECONDS
        next_pass = time.monotonic() + interval
        while True:
            try:
                tallies_snapshot(minute=timezone.now().replace(second=0, microsecond=0))
                if time.monotonic() >= next_pass:
                    next_pass = time.monotonic() + interval
                    lifeline_pass()
            except Error as exc:
                logger.warning("Lifeline: PostgreSQL failed (%s: %s); trying again in %g s", type(exc).__name__,
                               str(exc).strip(), min(interval, SNAPSHOT_CHECK_SECONDS))
                with contextlib.suppress(Error):
                    connection.close()
            except Exception:
                logger.exception("Lifeline pass failed; the next one is in %g s", interval)
            time.sleep(min(interval, SNAPSHOT_CHECK_SECONDS))

    thread = threading.Thread(target=run, name="lifeline", daemon=True)
    thread.start()
    return thread
