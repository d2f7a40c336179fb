"""Time limits for jobs that run in threads. Celery enforces a job's soft and hard time limits only in its prefork
pool; a thread-pool worker (config/worker.py's JobThreadPool) calls `limits_enforce` a few times a second:

- at the soft limit, SoftTimeLimitExceeded is raised inside the job's thread, at its next Python instruction (a
  blocking call returns first: every kind's network calls have timeouts shorter than its limit), and the job
  fails with the same message as under prefork;
- at the hard limit (the job ignored the soft one, or is stuck in C code), the job is failed for it, the thread's
  PostgreSQL session is closed (the job's advisory lock goes with it, so nothing counts it as running), and the
  worker gives up on the thread and starts another in its place.

Only the kind's own code is watched (JobTask wraps it in `job_code_watched`), never Conveyor's start and end.
"""
import ctypes
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from apps.jobs import lifecycle
from apps.jobs.models import Job

logger = logging.getLogger(__name__)


@dataclass
class Running:
    """A job's code running in a thread, and its limits in seconds from its start."""

    job: Job
    thread: int
    started: float
    soft: float
    hard: float
    database: BaseDatabaseWrapper
    soft_sent: bool = False


_running: dict[int, Running] = {}
_lock = threading.Lock()


@contextmanager
def job_code_watched(*, job: Job, soft: float, hard: float) -> Iterator[None]:
    """Watch the job's code run in this thread for the block's length.

    The soft limit's exception is raised under the same lock this block takes to end, and a raised one not
    delivered yet is withdrawn as it ends: it never lands in Conveyor's own code after the block.
    """
    thread = threading.get_ident()
    entry = Running(job, thread, time.monotonic(), soft, hard, connections[DEFAULT_DB_ALIAS])
    with _lock:
        _running[thread] = entry
    try:
        yield
    finally:
        with _lock:
            _running.pop(thread, None)
            if entry.soft_sent:
                _async_raise(thread, None)


def _async_raise(thread: int, exception: type[BaseException] | None) -> None:
    """Have `exception` raised in `thread` at its next instruction (None: withdraw one not raised yet)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread),
                                               ctypes.py_object(exception) if exception else None)


def limits_enforce() -> list[Running]:
    """Raise the soft limit in the threads past it; fail and give up on those past the hard one (returned)."""
    now = time.monotonic()
    with _lock:
        abandoned = [entry for entry in _running.values() if now - entry.started >= entry.hard]
        for entry in abandoned:
            del _running[entry.thread]
        for entry in _running.values():
            if now - entry.started >= entry.soft and not entry.soft_sent:
                entry.soft_sent = True
                _async_raise(entry.thread, SoftTimeLimitExceeded)
    for entry in abandoned:
        _abandon(entry)
    return abandoned


def _abandon(entry: Running) -> None:
    error = f"The job ran past its hard time limit of {entry.hard:g} seconds; the worker gave up on it."
    logger.error("Job %s: %s", entry.job.id, error)
    session = entry.database.connection  # psycopg2 lets another thread cancel and close it
    if session is not None:
        try:
            session.cancel()
            session.close()
        except Exception:  # already broken: then its lock is gone too
            logger.warning("Job %s: its thread's database session could not be closed cleanly", entry.job.id)
    lifecycle.attempt_fail(job=entry.job, error=error, traceback="", log=[])
