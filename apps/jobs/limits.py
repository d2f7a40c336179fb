"""Per-user limits on submissions, so that one account cannot take the system from the others: how many jobs a user
may submit a minute, and how many of their jobs may wait at once (queued, scheduled or retrying). Staff, and jobs
of no submitter (Conveyor's own, schedules), are exempt.

The rate is a token bucket per user: CONVEYOR_USER_SUBMISSIONS_PER_MINUTE submissions at once, then one every
60/N seconds. Its row (SubmissionAllowance) holds the time the bucket is full again; a submission moves it on by
60/N seconds unless that would put it more than a minute ahead, and otherwise is refused with the seconds until it
would not. Requests of one user take the row in turn, so the rate holds under any concurrency.

Cost, for a submission of a user who is not staff: one statement on top of the job's INSERT, one round trip.
It upserts one row of an UNLOGGED table (no WAL, so no flush to disk), and, when the rate admits the submission,
counts the user's waiting jobs in the partial index job_owner_waiting, reading at most
CONVEYOR_USER_JOBS_WAITING_MAX entries and stopping there. A refused flood costs the upsert alone. The waiting count
is not serialised: requests of one user in flight together may each see room for one more, so the waiting limit can
be passed by as many requests as that user has in flight at once.
"""
import math
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection

from apps.jobs.errors import SubmissionRefused
from apps.jobs.models import Job, SubmissionAllowance

JOBS, ALLOWANCES = Job._meta.db_table, SubmissionAllowance._meta.db_table
WINDOW = timedelta(minutes=1)

# Raw SQL: the bucket's take-or-refuse is one upsert whose condition reads the row it locks, and with the count it
# is one round trip; the ORM would need a transaction and three.
_TAKE = f"""
    INSERT INTO {ALLOWANCES} AS allowance (user_id, full_at) VALUES (%(user)s, statement_timestamp() + %(step)s)
    ON CONFLICT (user_id) DO UPDATE SET full_at = GREATEST(allowance.full_at, statement_timestamp()) + %(step)s
    WHERE GREATEST(allowance.full_at, statement_timestamp()) + %(step)s <= statement_timestamp() + %(window)s
    RETURNING 1
"""


def submission_admit(*, user: AbstractBaseUser | None) -> None:
    """Take one submission from `user`'s allowance, or SubmissionRefused saying which limit and, for the rate,
    in how many seconds to try again. Called by job_submit before anything else, so a refused flood is cheap."""
    if user is None or not user.is_authenticated or user.is_staff:
        return
    per_minute, waiting_max = settings.CONVEYOR_USER_SUBMISSIONS_PER_MINUTE, settings.CONVEYOR_USER_JOBS_WAITING_MAX
    if per_minute <= 0 and waiting_max <= 0:
        return
    step = WINDOW / per_minute if per_minute > 0 else timedelta(0)
    with connection.cursor() as cursor:
        # Each uncorrelated subquery runs only where its CASE reads it: the wait when the rate refuses (the row as it
        # was before this statement), the count when it admits.
        cursor.execute(
            f"""
            WITH taken AS ({_TAKE if per_minute > 0 else "SELECT 1"})
            SELECT
                EXISTS (SELECT 1 FROM taken),
                CASE WHEN NOT EXISTS (SELECT 1 FROM taken) THEN (
                    SELECT EXTRACT(EPOCH FROM full_at + %(step)s - statement_timestamp() - %(window)s)
                    FROM {ALLOWANCES} WHERE user_id = %(user)s
                ) END,
                CASE WHEN %(waiting_max)s > 0 AND EXISTS (SELECT 1 FROM taken) THEN (
                    SELECT count(*) FROM (
                        SELECT 1 FROM {JOBS} WHERE submitted_by_id = %(user)s AND status = ANY(%(waiting)s)
                        LIMIT %(waiting_max)s
                    ) AS waiting
                ) END
            """,
            {"user": user.pk, "step": step, "window": WINDOW, "waiting": list(Job.WAITING),
             "waiting_max": waiting_max},
        )
        admitted, wait_seconds, waiting = cursor.fetchone()
    if not admitted:
        retry_after = max(1, math.ceil(wait_seconds or 0))
        raise SubmissionRefused(
            f"Too many submissions: an account may submit {per_minute} job{'s' if per_minute != 1 else ''} a minute. "
            f"Try again in {retry_after} second{'s' if retry_after != 1 else ''}.",
            retry_after=retry_after,
        )
    if waiting_max > 0 and waiting >= waiting_max:
        raise SubmissionRefused(
            f"You have {waiting_max} jobs waiting to run (queued, scheduled or retrying), the most an account may "
            "have at once. Submit more once some of them have started, or cancel those you no longer need."
        )
