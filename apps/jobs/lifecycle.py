"""The life of a job in one module: its states, the transitions between them, the operator actions each state
allows, and every transition as the one statement that makes it.

    submit ─▶ queued ──start──▶ running ──succeed──▶ succeeded
      │         ▲  ▲             │ │ │  └──fail────▶ failed ─────┐
      │         │  └─redispatch──┘ │ └─retry later─▶ retrying    │ retry (operator)
      │         │   (message lost) │                 │  start ─▶ running
      │         │                  └─ start again (a takeover: its worker died)
      │         └──────────── retry (operator) ◀── cancelled ◀── cancel (operator): queued, scheduled,
      │                                                          retrying, or running if interruptible
      └─ run_after in the future ─▶ scheduled ──start (its run_after came)──▶ running

The outbox: a job that waits for a message (Job.WAITING: queued, scheduled or retrying) and whose message is
not published is due for one at `due_at` (now, a scheduled job's run_after, or a retry's backoff). The relay
(apps/jobs/relay.py) is the one publisher: it claims due jobs, which raises their `generation`, publishes a
message carrying that number, and marks the confirmed ones published. Nothing else publishes a job's message:
a deferred start, a retry after backoff, an operator's retry, a re-drive and a reconciled job are rows put
back in (or waiting in) the outbox.

The fence: a worker runs a message only if its generation is the job's current one and no live attempt holds
the job. A running attempt holds a PostgreSQL session advisory lock keyed by the job, taken by the statement
that starts it and released by the one that ends it; PostgreSQL releases it when the worker's connection dies
with its process, so "running elsewhere" and "its worker is gone" are facts PostgreSQL knows, not guesses from
timestamps. Every other message is acknowledged and dropped with a log line naming the job.

Raw SQL here earns its place: a start and an end are each one round trip (the job, its attempt and the
lock together), measured at 0.9 ms each against a transaction of five ORM queries before (README, Benchmark).
Rows read back are loaded the ORM's way (apps/jobs/rows.py). Sessions must be PostgreSQL's own (no
transaction-pooling proxy in between), as session advisory locks need.
"""
import enum
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from apps.jobs.errors import ActionNotAllowed
from apps.jobs.models import Job, JobAttempt
from apps.jobs.registry import JobKind
from apps.jobs.rows import row_insert_sql, row_load

logger = logging.getLogger(__name__)

Status = Job.Status
Outcome = JobAttempt.Outcome
JOBS, ATTEMPTS = Job._meta.db_table, JobAttempt._meta.db_table


@dataclass(frozen=True)
class Transition:
    """A named move of a job from any of `sources` to `target`."""

    name: str
    sources: tuple[str, ...]
    target: str


# Every transition a job can make; the statements below take their WHERE clauses from these.
# A scheduled job starts from the message the relay published once its run_after came; running: a takeover.
START = Transition("start", (Status.QUEUED, Status.SCHEDULED, Status.RETRYING, Status.RUNNING), Status.RUNNING)
SUCCEED = Transition("succeed", (Status.RUNNING,), Status.SUCCEEDED)
RETRY_LATER = Transition("retry later", (Status.RUNNING,), Status.RETRYING)
FAIL = Transition("fail", (Status.RUNNING,), Status.FAILED)
RETRY = Transition("retry", (Status.FAILED, Status.CANCELLED), Status.QUEUED)
CANCEL = Transition("cancel", (Status.QUEUED, Status.SCHEDULED, Status.RETRYING, Status.RUNNING), Status.CANCELLED)
REDISPATCH = Transition("redispatch", (Status.QUEUED, Status.SCHEDULED, Status.RETRYING, Status.RUNNING), Status.QUEUED)
TRANSITIONS = (START, SUCCEED, RETRY_LATER, FAIL, RETRY, CANCEL, REDISPATCH)

# What an operator may do (pages, API, admin, re-drive), by the transition each action makes.
ACTIONS = {"retry": RETRY, "cancel": CANCEL}
_ACTION_VERBS = {"retry": "retried", "cancel": "cancelled"}


def action_sources(*, action: str, kind: JobKind | None) -> tuple[str, ...]:
    """The states in which `action` applies to a job of `kind`: a running job is cancelled only if its kind
    stops at its progress reports (interruptible)."""
    sources = ACTIONS[action].sources
    if ACTIONS[action] is CANCEL and not (kind is not None and kind.interruptible):
        sources = tuple(status for status in sources if status != Status.RUNNING)
    return sources


def action_refusal(*, action: str, job: Job, kind: JobKind | None) -> str | None:
    """Why `action` does not apply to `job` in its state, in words for the operator; None when it does."""
    if job.status in action_sources(action=action, kind=kind):
        return None
    if job.status in ACTIONS[action].sources:  # running, of a kind that cannot stop
        return f"Jobs of kind {job.kind} cannot be interrupted once running."
    *others, last = ACTIONS[action].sources
    allowed = f"{', '.join(others)} or {last}" if others else last
    return f"Only {allowed} jobs can be {_ACTION_VERBS[action]}; this job is {job.status}."


def job_actions(*, job: Job, kind: JobKind | None) -> list[str]:
    """The operator actions `job` allows now; pages, the API, job.js and the admin draw their buttons from it."""
    return [action for action in ACTIONS if action_refusal(action=action, job=job, kind=kind) is None]


def lock_key(job_id: uuid.UUID | str) -> int:
    """The job's advisory lock key: the first 64 bits of its id."""
    return int.from_bytes(uuid.UUID(str(job_id)).bytes[:8], "big", signed=True)


def _text(value: str) -> str:
    # PostgreSQL's text and jsonb cannot hold NUL; an error message or a log line might.
    return value.replace("\x00", "\\x00")


def _async_commit(sql: str) -> str:
    """`sql` run as a transaction whose COMMIT does not wait for the disk (synchronous_commit off).

    For the writes of a running attempt (its start, its progress): PostgreSQL writes one WAL in order, so
    the synchronous commit that stores the attempt's outcome, made before the message is acknowledged,
    makes them durable too. A crash before then loses a "running" or progress mark, and the unacknowledged
    message runs again. One query string is one implicit transaction, SET LOCAL included, so this needs
    autocommit, where Django runs a worker's writes. https://www.postgresql.org/docs/15/wal-async-commit.html
    """
    if connection.in_atomic_block:
        raise RuntimeError("An attempt's statements run in autocommit, not inside a caller's transaction.")
    return f"SET LOCAL synchronous_commit TO OFF; {sql}"


# --- Submit -----------------------------------------------------------------------------------------


def job_record(*, job: Job) -> None:
    """Write a new job, in the caller's transaction if there is one: queued and due now in the outbox, or,
    when its run_after is in the future, scheduled and due then (the relay publishes it at that time).

    A plain INSERT: the ORM's took 0.3 ms of CPU to build, and this is every submission's one write.
    """
    now = timezone.now()
    if job.run_after is not None and job.run_after > now:
        job.status, job.due_at = Status.SCHEDULED, job.run_after
    else:
        job.status, job.due_at = Status.QUEUED, job.due_at or now
    with connection.cursor() as cursor:
        cursor.execute(*row_insert_sql(job))
    job._state.adding, job._state.db = False, connection.alias


# --- Dispatch (the relay) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dispatch:
    """One message the relay owes: the job, where it goes, the generation it carries, and the due time it was
    claimed at (a confirm counts only while the job still waits for that same dispatch)."""

    job_id: uuid.UUID
    kind: str
    queue: str
    trace_id: str
    generation: int
    due_at: datetime


def dispatch_claim(*, kinds: list[str], limit: int) -> list[Dispatch]:
    """Claim up to `limit` due jobs of the outbox, oldest due first: each one's generation goes up by one.

    Committed before the messages are published, so a worker that gets one finds its generation current.
    A claim that is never confirmed leaves the job in the outbox; the next claim raises the generation
    again, so a message that did reach RabbitMQ unconfirmed is dropped by the fence. Rows an operator is
    changing at this moment are skipped, not waited for. Only kinds this process knows are claimed.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {JOBS} SET generation = generation + 1
            WHERE id IN (
                SELECT id FROM {JOBS}
                WHERE published_at IS NULL AND status = ANY(%(waiting)s) AND due_at <= %(now)s AND kind = ANY(%(kinds)s)
                ORDER BY due_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
            )
            RETURNING id, kind, queue, trace_id, generation, due_at
            """,
            {"waiting": list(Job.WAITING), "now": timezone.now(), "kinds": kinds, "limit": limit},
        )
        rows = sorted(cursor.fetchall(), key=lambda row: row[5])
    return [Dispatch(*row) for row in rows]


def dispatch_confirm(*, dispatches: list[Dispatch]) -> None:
    """Mark published the jobs whose messages RabbitMQ confirmed, unless something happened to the job since
    its claim: a later claim (another generation), or a new wait for the outbox set by the attempt its message
    already ran (a retry after backoff, a deferral) or by an operator, which keeps the generation but moves
    due_at. Marking such a job published would leave it waiting for a message nobody sends."""
    if not dispatches:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {JOBS} SET published_at = %s
            FROM unnest(%s::uuid[], %s::integer[], %s::timestamptz[]) AS confirmed (id, generation, due_at)
            WHERE {JOBS}.id = confirmed.id AND {JOBS}.generation = confirmed.generation
                AND {JOBS}.due_at = confirmed.due_at AND {JOBS}.published_at IS NULL
            """,
            [
                timezone.now(),
                [d.job_id for d in dispatches],
                [d.generation for d in dispatches],
                [d.due_at for d in dispatches],
            ],
        )


def dispatch_next_due(*, kinds: list[str]) -> datetime | None:
    """When the next job of the outbox falls due (a retry's backoff, a deferred start), if any waits."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT min(due_at) FROM {JOBS} WHERE published_at IS NULL AND status = ANY(%s) AND kind = ANY(%s)",
            [list(Job.WAITING), kinds],
        )
        return cursor.fetchone()[0]


def dispatch_defer(*, job_id: str, generation: int, seconds: float) -> None:
    """Put a waiting job back in the outbox, due in `seconds`: its message came while an earlier attempt
    still held it (cancelled, not yet stopped), and the relay dispatches it again once that has ended."""
    Job.objects.filter(id=job_id, generation=generation, status__in=Job.WAITING).update(
        published_at=None, due_at=timezone.now() + timedelta(seconds=seconds)
    )


# --- Run (the worker) -------------------------------------------------------------------------------


class Verdict(enum.Enum):
    STARTED = "started"
    GONE = "the job no longer exists"
    STALE = "an earlier dispatch"
    FINISHED = "the job has finished"
    RUNNING_ELSEWHERE = "the job is running elsewhere"
    BUSY = "an earlier attempt of the job is still stopping"


@dataclass(frozen=True)
class Start:
    """What the fence decided about one delivery, and the job as started when it runs."""

    verdict: Verdict
    job: Job | None = None
    status: str = ""
    generation: int = 0
    # Attempts in a row whose worker died, the one this start took over included (0: no takeover).
    lost_in_a_row: int = 0


def attempt_start(*, job_id: str, generation: int, worker: str) -> Start:
    """The fence and the start of an attempt, in one statement.

    Runs only if `generation` is the job's current one, its state is one a start leaves, and its advisory
    lock is free (no live attempt). Then the lock is held by this session, the job is running as a new
    attempt, and an attempt the job's previous worker left running (it died) is recorded as lost. The lock
    is tried only when the rest allows a start, so a refused delivery takes nothing.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _async_commit(f"""
            WITH target AS MATERIALIZED (
                SELECT id, status, generation,
                    CASE WHEN generation = %(generation)s AND status = ANY(%(sources)s)
                         THEN pg_try_advisory_lock(%(key)s) ELSE false END AS held
                FROM {JOBS} WHERE id = %(id)s
            ), started AS (
                UPDATE {JOBS} SET attempts = attempts + 1, status = %(running)s, started_at = %(now)s,
                    progress = 0, progress_message = ''
                FROM target
                WHERE {JOBS}.id = target.id AND target.held AND {JOBS}.generation = %(generation)s
                    AND {JOBS}.status = ANY(%(sources)s)
                RETURNING {JOBS}.*
            ), lost AS (
                UPDATE {ATTEMPTS} SET outcome = %(lost)s, finished_at = %(now)s, error = %(lost_error)s
                FROM started
                WHERE job_id = started.id AND number = started.attempts - 1 AND outcome = %(running)s
                RETURNING number
            ), attempt AS (
                INSERT INTO {ATTEMPTS} (job_id, number, worker, started_at, outcome, error, log, traceback)
                SELECT id, attempts, %(worker)s, %(now)s, %(running)s, '', '[]', '' FROM started
            )
            SELECT target.status AS fence_status, target.generation AS fence_generation,
                target.held AS fence_held, EXISTS (SELECT 1 FROM lost) AS fence_took_over, started.*
            FROM target LEFT JOIN started ON true
            """),
            {
                "id": job_id, "generation": generation, "sources": list(START.sources), "key": lock_key(job_id),
                "running": Status.RUNNING, "now": timezone.now(), "worker": worker, "lost": Outcome.LOST,
                "lost_error": "The worker running this attempt died.",
            },
        )
        row = cursor.fetchone()
        columns = [column.name for column in cursor.description]
    if row is None:
        return Start(Verdict.GONE)
    values = dict(zip(columns, row, strict=True))
    status, current, held = values["fence_status"], values["fence_generation"], values["fence_held"]
    if values["id"] is not None:
        job = row_load(Job, values)
        lost = attempts_lost_in_a_row(job=job) if values["fence_took_over"] else 0
        return Start(Verdict.STARTED, job=job, status=status, generation=current, lost_in_a_row=lost)
    if held:  # the lock was free but the job changed under the statement: let go of it
        attempt_release(job_id=job_id)
    if current != generation:
        verdict = Verdict.STALE
    elif status in Job.FINISHED:
        verdict = Verdict.FINISHED
    elif status == Status.RUNNING:
        verdict = Verdict.RUNNING_ELSEWHERE
    else:
        verdict = Verdict.BUSY
    return Start(verdict, status=status, generation=current)


def attempts_lost_in_a_row(*, job: Job) -> int:
    """How many attempts in a row, newest first, ended because their worker died."""
    outcomes = JobAttempt.objects.filter(job_id=job.id).exclude(outcome=Outcome.RUNNING).order_by("-number")
    lost = 0
    for outcome in outcomes.values_list("outcome", flat=True).iterator():
        if outcome != Outcome.LOST:
            break
        lost += 1
    return lost


def jobs_alive(*, job_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
    """Those of `job_ids` that a live attempt holds (their advisory lock is taken)."""
    wanted = {lock_key(job_id): job_id for job_id in job_ids}
    if not wanted:
        return set()
    with connection.cursor() as cursor:
        # pg_locks shows a bigint key as its high half in classid and its low half in objid, objsubid 1.
        cursor.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks"
            " WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
        )
        held = {key for (key,) in cursor.fetchall()}
    return {job_id for key, job_id in wanted.items() if key in held}


def attempt_release(*, job_id: str) -> None:
    """Let go of the job's advisory lock, for an attempt that ends without its end statement."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_key(job_id)])


def attempt_progress(*, job: Job, percent: int, message: str) -> bool:
    """Record the running attempt's progress; False when the job is no longer this attempt's (cancelled)."""
    with connection.cursor() as cursor:
        cursor.execute(
            _async_commit(f"UPDATE {JOBS} SET progress = %s, progress_message = %s"
                          " WHERE id = %s AND status = %s AND attempts = %s"),
            [max(0, min(100, int(percent))), _text(message[:200]), job.id, Status.RUNNING, job.attempts],
        )
        return cursor.rowcount == 1


def _attempt_end(*, job: Job, transition: Transition | None, job_changes: dict[str, Any], outcome: str,
                 attempt_changes: dict[str, Any]) -> bool:
    """One statement, committed synchronously before the message is acknowledged: the job moves by
    `transition` (unless it is no longer this attempt's: cancelled meanwhile, or taken over), the attempt
    ends with `outcome`, and the job's lock is let go. True when the job moved."""
    now = timezone.now()
    if transition is not None and transition.target in Job.FINISHED:
        job_changes = {"finished_at": now, **job_changes}
    attempt_changes = {"outcome": outcome, "finished_at": now, **attempt_changes}
    job_set = ", ".join(f"{column} = %({column})s" for column in job_changes)
    attempt_set = ", ".join(f"{column} = %(attempt_{column})s" for column in attempt_changes)
    params = {
        **job_changes, **{f"attempt_{column}": value for column, value in attempt_changes.items()},
        "id": job.id, "number": job.attempts, "running": Status.RUNNING, "key": lock_key(job.id),
        "target": transition.target if transition else None,
        "sources": list(transition.sources) if transition else [],
    }
    moved = (
        f"""moved AS (
            UPDATE {JOBS} SET status = %(target)s, {job_set}
            WHERE id = %(id)s AND status = ANY(%(sources)s) AND attempts = %(number)s RETURNING 1
        ),""" if transition else "moved AS (SELECT 1 WHERE false),"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH {moved} attempt AS (
                UPDATE {ATTEMPTS} SET {attempt_set}
                WHERE job_id = %(id)s AND number = %(number)s AND outcome = %(running)s
            )
            SELECT EXISTS (SELECT 1 FROM moved), pg_advisory_unlock(%(key)s)
            """,
            params,
        )
        return cursor.fetchone()[0]


def attempt_succeed(*, job: Job, result_json: str, log: list[dict]) -> bool:
    """The attempt succeeded with `result_json` (JSON text, checked by the caller); so did the job."""
    return _attempt_end(
        job=job, transition=SUCCEED, job_changes={"progress": 100, "error": "", "due_at": None},
        outcome=Outcome.SUCCEEDED, attempt_changes={"result": result_json, "log": _log_json(log)},
    )


def attempt_retry_later(*, job: Job, error: str, traceback: str, delay: float, log: list[dict],
                        spends_retry: bool = True) -> bool:
    """The attempt failed for now: the job waits `delay` seconds, due in the outbox for its next attempt.
    Unless `spends_retry` is False (PostgreSQL went away under it), the attempt counts against its retries."""
    return _attempt_end(
        job=job, transition=RETRY_LATER,
        job_changes={"error": _text(error), "retries": job.retries + int(spends_retry), "published_at": None,
                     "due_at": timezone.now() + timedelta(seconds=delay)},
        outcome=Outcome.RETRYING,
        attempt_changes={"error": _text(error), "traceback": _text(traceback), "retry_delay": delay,
                         "log": _log_json(log)},
    )


def attempt_fail(*, job: Job, error: str, traceback: str, log: list[dict]) -> bool:
    """The attempt failed for good, and with it the job."""
    return _attempt_end(
        job=job, transition=FAIL, job_changes={"error": _text(error), "due_at": None},
        outcome=Outcome.FAILED,
        attempt_changes={"error": _text(error), "traceback": _text(traceback), "log": _log_json(log)},
    )


def attempt_cancelled(*, job: Job, log: list[dict]) -> None:
    """The attempt stopped because an operator cancelled the job while it ran (the job is cancelled already)."""
    _attempt_end(job=job, transition=None, job_changes={}, outcome=Outcome.CANCELLED,
                 attempt_changes={"error": "Cancelled by an operator.", "log": _log_json(log)})


def _log_json(lines: list[dict]) -> str:
    return json.dumps([{**line, "message": _text(line["message"])} for line in lines])


# --- Operator actions -------------------------------------------------------------------------------


def job_retry(*, job: Job) -> Job:
    """A failed or cancelled job goes back to the outbox as a new run; its earlier attempts stay in history."""
    return _job_act(job=job, action="retry", kind=None, changes={
        "due_at": timezone.now(), "published_at": None, "retries": 0, "progress": 0, "progress_message": "",
        "error": "", "finished_at": None,
    })


def job_cancel(*, job: Job, kind: JobKind | None) -> Job:
    """Cancel a waiting job, scheduled ones included (it never runs), or a running one of an interruptible kind
    (it stops at its next progress report)."""
    return _job_act(job=job, action="cancel", kind=kind, changes={"finished_at": timezone.now(), "due_at": None})


def _job_act(*, job: Job, action: str, kind: JobKind | None, changes: dict[str, Any]) -> Job:
    """The action's transition as one UPDATE guarded by its source states, then the job as it is now."""
    sources = action_sources(action=action, kind=kind)
    moved = Job.objects.filter(id=job.id, status__in=sources).update(status=ACTIONS[action].target, **changes)
    job = Job.objects.get(id=job.id)
    if not moved:
        raise ActionNotAllowed(action_refusal(action=action, job=job, kind=kind) or "The job changed meanwhile.")
    return job


# --- Lifeline (reconciler, re-drive) ----------------------------------------------------------------


def jobs_redispatch(*, job_ids: Iterable[uuid.UUID], statuses: Iterable[str], published_before: datetime | None = None,
                    started_before: datetime | None = None) -> int:
    """Put jobs whose message is lost back in the outbox as queued, due now; how many moved.

    Only jobs still in one of `statuses`, and, when given, still published or started before those times:
    a job that started or was dispatched again since it was looked at is left alone.
    """
    jobs = Job.objects.filter(id__in=list(job_ids), status__in=[s for s in statuses if s in REDISPATCH.sources])
    if published_before is not None:
        jobs = jobs.filter(published_at__lt=published_before)
    if started_before is not None:
        jobs = jobs.filter(started_at__lt=started_before)
    return jobs.update(status=REDISPATCH.target, published_at=None, due_at=timezone.now())
