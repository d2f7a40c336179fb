"""Tallies: what /metrics and the dashboard count, kept by PostgreSQL as jobs change rather than counted over the
jobs at each reading (a million jobs took 0.2-0.5 s a scrape). The names and histogram bounds live here;
migration 0004 builds its triggers from TALLY_SQL.

Names, per job kind:
- `submitted`; `status:<status>` (jobs in that status now); `finished:<status>` (jobs that reached it);
- `attempt:<outcome>` (attempts that ended so), `duration:<i>` and `duration_sum` (their run time);
- `latency:<i>` and `latency_sum` (submission to first start);
- `reconciled` (kind ""): jobs the lifeline dispatched again.
`<i>` is the index of the first bound at or above the value in DURATION_BUCKETS or LATENCY_BUCKETS, or their
length for larger values.
"""
from collections import defaultdict
from datetime import datetime, timedelta
from itertools import pairwise

from django.db import connection
from django.db.models import Sum

from apps.jobs.models import JobTally, JobTallyMinute

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
CREATE FUNCTION jobs_tally(p_kind text, p_names text[], p_deltas float8[]) RETURNS void LANGUAGE sql AS $$
    -- Sorted, so two statements that touch the same rows lock them in the same order.
    INSERT INTO jobs_jobtally (kind, name, shard, value)
    SELECT p_kind, name, pg_backend_pid() % {SHARDS}, delta FROM unnest(p_names, p_deltas) AS t (name, delta)
    ORDER BY name
    ON CONFLICT (kind, name, shard) DO UPDATE SET value = jobs_jobtally.value + EXCLUDED.value
$$;

CREATE FUNCTION jobs_job_tally() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    names text[];
    deltas float8[];
    waited float8;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM jobs_tally(NEW.kind, ARRAY['submitted', 'status:' || NEW.status], ARRAY[1, 1]::float8[]);
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM jobs_tally(OLD.kind, ARRAY['status:' || OLD.status], ARRAY[-1]::float8[]);
        RETURN NULL;
    END IF;
    names := ARRAY['status:' || OLD.status, 'status:' || NEW.status];
    deltas := ARRAY[-1, 1]::float8[];
    IF NEW.status IN ('succeeded', 'failed', 'cancelled') THEN
        names := names || ('finished:' || NEW.status);
        deltas := deltas || 1::float8;
    END IF;
    IF OLD.attempts = 0 AND NEW.attempts = 1 THEN
        waited := greatest(0, extract(epoch FROM NEW.started_at - NEW.created_at));
        names := names || ARRAY['latency:' || {_bucket_sql(LATENCY_BUCKETS, "waited")}, 'latency_sum'];
        deltas := deltas || ARRAY[1, waited];
    END IF;
    PERFORM jobs_tally(NEW.kind, names, deltas);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_job_tally AFTER INSERT OR DELETE ON jobs_job
    FOR EACH ROW EXECUTE FUNCTION jobs_job_tally();
CREATE TRIGGER jobs_job_tally_status AFTER UPDATE OF status ON jobs_job
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION jobs_job_tally();

CREATE FUNCTION jobs_jobattempt_tally() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ran float8 := greatest(0, extract(epoch FROM NEW.finished_at - NEW.started_at));
BEGIN
    PERFORM jobs_tally(
        (SELECT kind FROM jobs_job WHERE id = NEW.job_id),
        ARRAY['attempt:' || NEW.outcome, 'duration:' || {_bucket_sql(DURATION_BUCKETS, "ran")}, 'duration_sum'],
        ARRAY[1, 1, ran]
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_jobattempt_tally AFTER UPDATE OF outcome ON jobs_jobattempt
    FOR EACH ROW WHEN (OLD.outcome = 'running' AND NEW.outcome <> 'running') EXECUTE FUNCTION jobs_jobattempt_tally();

-- The jobs already there, counted once.
INSERT INTO jobs_jobtally (kind, name, shard, value)
SELECT kind, name, 0, sum(value) FROM (
    SELECT kind, 'submitted' AS name, count(*)::float8 AS value FROM jobs_job GROUP BY kind
    UNION ALL SELECT kind, 'status:' || status, count(*) FROM jobs_job GROUP BY kind, status
    UNION ALL SELECT kind, 'finished:' || status, count(*) FROM jobs_job
        WHERE status IN ('succeeded', 'failed', 'cancelled') GROUP BY kind, status
    UNION ALL SELECT job.kind, 'attempt:' || attempt.outcome, count(*)
        FROM jobs_jobattempt attempt JOIN jobs_job job ON job.id = attempt.job_id
        WHERE attempt.outcome <> 'running' GROUP BY job.kind, attempt.outcome
    UNION ALL SELECT kind, 'duration:' || bucket, count(*) FROM (
        SELECT job.kind, {_bucket_sql(DURATION_BUCKETS, "extract(epoch FROM attempt.finished_at - attempt.started_at)")}
            AS bucket
        FROM jobs_jobattempt attempt JOIN jobs_job job ON job.id = attempt.job_id
        WHERE attempt.outcome <> 'running' AND attempt.finished_at IS NOT NULL
    ) AS ran GROUP BY kind, bucket
    UNION ALL SELECT job.kind, 'duration_sum', sum(extract(epoch FROM attempt.finished_at - attempt.started_at))
        FROM jobs_jobattempt attempt JOIN jobs_job job ON job.id = attempt.job_id
        WHERE attempt.outcome <> 'running' AND attempt.finished_at IS NOT NULL GROUP BY job.kind
    UNION ALL SELECT kind, 'latency:' || bucket, count(*) FROM (
        SELECT job.kind, {_bucket_sql(LATENCY_BUCKETS, "extract(epoch FROM attempt.started_at - job.created_at)")}
            AS bucket
        FROM jobs_jobattempt attempt JOIN jobs_job job ON job.id = attempt.job_id WHERE attempt.number = 1
    ) AS waited GROUP BY kind, bucket
    UNION ALL SELECT job.kind, 'latency_sum', sum(greatest(0, extract(epoch FROM attempt.started_at - job.created_at)))
        FROM jobs_jobattempt attempt JOIN jobs_job job ON job.id = attempt.job_id WHERE attempt.number = 1
        GROUP BY job.kind
) AS counted GROUP BY kind, name;
"""

TALLY_SQL_REVERSE = """
DROP TRIGGER jobs_jobattempt_tally ON jobs_jobattempt;
DROP FUNCTION jobs_jobattempt_tally();
DROP TRIGGER jobs_job_tally_status ON jobs_job;
DROP TRIGGER jobs_job_tally ON jobs_job;
DROP FUNCTION jobs_job_tally();
DROP FUNCTION jobs_tally(text, text[], float8[]);
DELETE FROM jobs_jobtally;
"""


def tallies_read() -> dict[tuple[str, str], float]:
    """Every tally now, summed over its shards: (kind, name) -> value."""
    rows = JobTally.objects.values_list("kind", "name").annotate(total=Sum("value")).order_by()
    return {(kind, name): total for kind, name, total in rows}


def tally_add(*, kind: str, name: str, delta: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT jobs_tally(%s, ARRAY[%s], ARRAY[%s]::float8[])", [kind, name, delta])


def tallies_snapshot(*, minute: datetime) -> None:
    """Record the growing tallies as they stand at `minute` (once a minute; a second call changes nothing), and
    forget snapshots older than SNAPSHOT_DAYS."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {JobTallyMinute._meta.db_table} (minute, name, value)
            SELECT %s, grown.name, coalesce(sum(tally.value), 0)
            FROM unnest(%s::text[]) AS grown (name) LEFT JOIN {JobTally._meta.db_table} tally ON tally.name = grown.name
            GROUP BY grown.name
            ON CONFLICT (minute, name) DO NOTHING
            """,
            [minute, list(GROWING)],
        )
    JobTallyMinute.objects.filter(minute__lt=minute - timedelta(days=SNAPSHOT_DAYS)).delete()


def tallies_grown_per_minute(*, since: datetime, now: datetime) -> tuple[datetime | None, list[tuple[datetime, dict]]]:
    """How the growing tallies (summed over kinds) grew in each minute from `since` to `now`, the minute under
    way last: (the first snapshot used, or None when there is none yet; [(minute, {name: growth})])."""
    snapshots: dict[datetime, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for minute, name, value in JobTallyMinute.objects.filter(minute__gte=since - timedelta(minutes=1)).values_list(
        "minute", "name", "value"
    ):
        snapshots[minute][name] += value
    totals: dict[str, float] = defaultdict(float)
    for (_, name), value in tallies_read().items():
        if name in GROWING:
            totals[name] += value
    points = [*sorted(snapshots.items()), (now, totals)]
    if len(points) < 2:
        return None, []
    growth = [
        (minute, {name: later.get(name, 0.0) - earlier.get(name, 0.0) for name in GROWING})
        for (minute, earlier), (_, later) in pairwise(points)
    ]
    return points[0][0], growth
