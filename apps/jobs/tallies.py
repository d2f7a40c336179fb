"""Tallies: what /metrics and the dashboard count, kept by PostgreSQL as jobs change rather than counted over the
jobs at each reading (a million jobs took 0.2-0.5 s a scrape). The names and histogram bounds live here;
migration 0004 builds its triggers from TALLY_SQL.

What the triggers write, per job kind, as few rows as a change needs (each row an upsert that every job pays for):
- `moves:<from>><to>`: jobs that moved between two states (`from` empty for a new job, `to` empty for one
  deleted); one row per change of state;
- `attempt:<outcome>:<i>`: attempts that ended so, by duration, with their seconds in `total`;
- `latency:<i>`: first starts, by the time since submission, with their seconds in `total`;
- `reconciled` (kind ""): jobs the lifeline dispatched again.
`<i>` is the index of the first bound at or above the value in DURATION_BUCKETS or LATENCY_BUCKETS, or their
length for larger values. `tallies_read` derives what readers want from them: `submitted`, `status:<status>`
(jobs in it now), `finished:<status>`, `attempt:<outcome>`, `duration:<i>`, `duration_sum`, `latency:<i>`,
`latency_sum`, `reconciled`.
"""
from collections import defaultdict
from datetime import datetime, timedelta
from itertools import pairwise

from django.db import connection
from django.db.models import Sum

from apps.jobs.models import Job, JobTally, JobTallyMinute

# Rows per count: each PostgreSQL backend adds to shard pg_backend_pid() % SHARDS, so concurrent workers
# rarely touch the same row, and none waits for another's commit to count.
SHARDS = 16
# Histogram bounds, in seconds: from a no-op job to a long report; from an idle system to a long backlog.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# The tallies that only grow, snapshotted each minute for the dashboard's hour and day.
GROWING = ("submitted", "finished:succeeded", "finished:failed", "finished:cancelled", "reconciled")
# How long minute snapshots are kept: the dashboard looks back a day.
SNAPSHOT_DAYS = 2


def _bucket_sql(bounds: tuple[float, ...], seconds: str) -> str:
    array = ", ".join(str(float(bound)) for bound in bounds)
    return f"(SELECT count(*) FROM unnest(ARRAY[{array}]::float8[]) AS bound WHERE bound < {seconds})"


# The triggers; written once by migration 0004 (a later change of bounds needs a migration of its own).
TALLY_SQL = f"""
CREATE FUNCTION jobs_tally(p_kind text, p_names text[], p_values float8[], p_totals float8[]) RETURNS void
LANGUAGE sql AS $$
    -- Sorted, so two statements that touch the same rows lock them in the same order.
    INSERT INTO jobs_jobtally (kind, name, shard, value, total)
    SELECT p_kind, name, pg_backend_pid() % {SHARDS}, value, total
    FROM unnest(p_names, p_values, p_totals) AS t (name, value, total)
    ORDER BY name
    ON CONFLICT (kind, name, shard) DO UPDATE
    SET value = jobs_jobtally.value + EXCLUDED.value, total = jobs_jobtally.total + EXCLUDED.total
$$;

-- New and deleted jobs are counted once a statement (a bulk INSERT or a retention batch), so one statement never
-- updates a tally row once per job: within a transaction each update adds a row version that the next has to
-- step over, which made a million-row INSERT take minutes.
CREATE FUNCTION jobs_job_tally_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM jobs_tally(kind, array_agg('moves:>' || status), array_agg(count), array_agg(0::float8))
        FROM (SELECT kind, status, count(*)::float8 AS count FROM inserted GROUP BY kind, status) AS new_jobs
        GROUP BY kind;
    ELSE
        PERFORM jobs_tally(kind, array_agg('moves:' || status || '>'), array_agg(count), array_agg(0::float8))
        FROM (SELECT kind, status, count(*)::float8 AS count FROM deleted GROUP BY kind, status) AS gone
        GROUP BY kind;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_job_tally_insert AFTER INSERT ON jobs_job REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_job_tally_rows();
CREATE TRIGGER jobs_job_tally_delete AFTER DELETE ON jobs_job REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_job_tally_rows();

CREATE FUNCTION jobs_job_tally() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    waited float8;
BEGIN
    IF OLD.attempts = 0 AND NEW.attempts = 1 THEN
        waited := greatest(0, extract(epoch FROM NEW.started_at - NEW.created_at));
        PERFORM jobs_tally(
            NEW.kind,
            ARRAY['moves:' || OLD.status || '>' || NEW.status, 'latency:' || {_bucket_sql(LATENCY_BUCKETS, "waited")}],
            ARRAY[1, 1]::float8[], ARRAY[0, waited]
        );
    ELSE
        PERFORM jobs_tally(NEW.kind, ARRAY['moves:' || OLD.status || '>' || NEW.status], ARRAY[1::float8],
                           ARRAY[0::float8]);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_job_tally_status AFTER UPDATE OF status ON jobs_job
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION jobs_job_tally();

CREATE FUNCTION jobs_jobattempt_tally() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ran float8 := greatest(0, extract(epoch FROM NEW.finished_at - NEW.started_at));
BEGIN
    PERFORM jobs_tally(
        (SELECT kind FROM jobs_job WHERE id = NEW.job_id),
        ARRAY['attempt:' || NEW.outcome || ':' || {_bucket_sql(DURATION_BUCKETS, "ran")}], ARRAY[1::float8],
        ARRAY[ran]
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_jobattempt_tally AFTER UPDATE OF outcome ON jobs_jobattempt
    FOR EACH ROW WHEN (OLD.outcome = 'running' AND NEW.outcome <> 'running') EXECUTE FUNCTION jobs_jobattempt_tally();

-- The jobs already there, counted once: each as a new job that moved straight to its status now.
INSERT INTO jobs_jobtally (kind, name, shard, value, total)
SELECT kind, name, 0, sum(value), sum(total) FROM (
    SELECT kind, 'moves:>' || status AS name, count(*)::float8 AS value, 0::float8 AS total
        FROM jobs_job GROUP BY kind, status
    UNION ALL SELECT kind, 'attempt:' || outcome || ':' || bucket, count(*), sum(ran) FROM (
        SELECT job.kind, attempt.outcome,
            greatest(0, extract(epoch FROM attempt.finished_at - attempt.started_at)) AS ran,
            {_bucket_sql(DURATION_BUCKETS, "extract(epoch FROM attempt.finished_at - attempt.started_at)")} AS bucket
        FROM jobs_jobattempt attempt JOIN jobs_job job ON job.id = attempt.job_id
        WHERE attempt.outcome <> 'running' AND attempt.finished_at IS NOT NULL
    ) AS ended GROUP BY kind, outcome, bucket
    UNION ALL SELECT kind, 'latency:' || bucket, count(*), sum(waited) FROM (
        SELECT job.kind, greatest(0, extract(epoch FROM attempt.started_at - job.created_at)) AS waited,
            {_bucket_sql(LATENCY_BUCKETS, "extract(epoch FROM attempt.started_at - job.created_at)")} AS bucket
        FROM jobs_jobattempt attempt JOIN jobs_job job ON job.id = attempt.job_id WHERE attempt.number = 1
    ) AS first GROUP BY kind, bucket
) AS counted GROUP BY kind, name;
"""

TALLY_SQL_REVERSE = """
DROP TRIGGER jobs_jobattempt_tally ON jobs_jobattempt;
DROP FUNCTION jobs_jobattempt_tally();
DROP TRIGGER jobs_job_tally_status ON jobs_job;
DROP FUNCTION jobs_job_tally();
DROP TRIGGER jobs_job_tally_delete ON jobs_job;
DROP TRIGGER jobs_job_tally_insert ON jobs_job;
DROP FUNCTION jobs_job_tally_rows();
DROP FUNCTION jobs_tally(text, text[], float8[], float8[]);
DELETE FROM jobs_jobtally;
"""


def tallies_read() -> dict[tuple[str, str], float]:
    """Every tally now, summed over its shards and derived into what readers want (see the module):
    (kind, name) -> value."""
    rows = JobTally.objects.values_list("kind", "name").annotate(count=Sum("value"), seconds=Sum("total")).order_by()
    derived: dict[tuple[str, str], float] = defaultdict(float)
    for kind, name, count, seconds in rows:
        family, _, rest = name.partition(":")
        if family == "moves":
            source, target = rest.split(">")
            if not source:
                derived[kind, "submitted"] += count
            if source:
                derived[kind, f"status:{source}"] -= count
            if target:
                derived[kind, f"status:{target}"] += count
            if target in Job.FINISHED:
                derived[kind, f"finished:{target}"] += count
        elif family == "attempt":
            outcome, bucket = rest.split(":")
            derived[kind, f"attempt:{outcome}"] += count
            derived[kind, f"duration:{bucket}"] += count
            derived[kind, "duration_sum"] += seconds
        elif family == "latency":
            derived[kind, name] += count
            derived[kind, "latency_sum"] += seconds
        else:
            derived[kind, name] += count
    return dict(derived)


def tally_add(*, kind: str, name: str, delta: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT jobs_tally(%s, ARRAY[%s], ARRAY[%s]::float8[], ARRAY[0]::float8[])",
                       [kind, name, delta])


def tallies_snapshot(*, minute: datetime) -> None:
    """Record the growing tallies, summed over kinds, as they stand at `minute` (once a minute; a second call
    changes nothing), and forget snapshots older than SNAPSHOT_DAYS."""
    grown = _grown_now()
    snapshot = [JobTallyMinute(minute=minute, name=name, value=grown[name]) for name in GROWING]
    JobTallyMinute.objects.bulk_create(snapshot, ignore_conflicts=True)
    JobTallyMinute.objects.filter(minute__lt=minute - timedelta(days=SNAPSHOT_DAYS)).delete()


def _grown_now() -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for (_, name), value in tallies_read().items():
        if name in GROWING:
            totals[name] += value
    return totals


def tallies_grown_per_minute(*, since: datetime, now: datetime) -> tuple[datetime | None, list[tuple[datetime, dict]]]:
    """How the growing tallies (summed over kinds) grew in each minute from `since` to `now`, the minute under
    way last: (the first snapshot used, or None when there is none yet; [(minute, {name: growth})])."""
    snapshots: dict[datetime, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for minute, name, value in JobTallyMinute.objects.filter(minute__gte=since - timedelta(minutes=1)).values_list(
        "minute", "name", "value"
    ):
        snapshots[minute][name] += value
    points = [*sorted(snapshots.items()), (now, _grown_now())]
    if len(points) < 2:
        return None, []
    growth = [
        (minute, {name: later.get(name, 0.0) - earlier.get(name, 0.0) for name in GROWING})
        for (minute, earlier), (_, later) in pairwise(points)
    ]
    return points[0][0], growth
