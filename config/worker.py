"""The worker's own parts, kept apart from config.celery, which web processes import: its consumer
(CELERY_WORKER_CONSUMER), a bootstep that keeps its event loop's timers small, and the thread pool that runs
many jobs at once with time limits and a memory ceiling."""
import heapq
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import bootsteps
from celery.concurrency.thread import ApplyResult
from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.platforms import EX_OK
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from kombu import Connection
from kombu.asynchronous.timer import Timer

logger = logging.getLogger(__name__)

# Seconds between two sweeps of cancelled timers; one sweep over a few hundred thousand takes
# milliseconds.
TIMER_SWEEP_SECONDS = 30
# Seconds between two looks of the thread pool's watchdog at its jobs' time limits and its memory.
WATCH_SECONDS = 0.25


class JobConsumer(Consumer):
    """Celery's consumer, except that it publishes monitoring events without waiting for confirms, and does not
    declare Celery's native delayed delivery queues: a job's retry waits as a row in the outbox
    (apps/jobs/lifecycle.py), and no job message is published with a countdown.

    The broker's transport options ask RabbitMQ to confirm every publish, which job messages
    need. An event lost on the way costs a line in Flower, never a job, and waiting for the
    confirms of the three events of every job took half of the worker's main process (`make bench
    --profile`). The consumer opens a connection for writing only for its event dispatcher.
    https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-consumer
    """

    class Blueprint(Consumer.Blueprint):
        default_steps = [step for step in Consumer.Blueprint.default_steps if not step.endswith(":DelayedDelivery")]

    def connection_for_write(self, url: str | None = None, heartbeat: float | None = None) -> Connection:
        return self.ensure_connected(self.app.connection_for_write(
            url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}
        ))


class CancelledTimersSweep(bootsteps.StartStopStep):
    """Drops cancelled timers from the worker's event loop every TIMER_SWEEP_SECONDS.

    The prefork pool sets a soft and a hard time-limit timer for every job and cancels both when
    the job ends, but kombu's timer keeps a cancelled timer until it would have fired. With the
    330 s hard limit the main process held the timers of the last 330 s of jobs: 64 MiB more at
    about 400 jobs a second through the benchmark's backlog. https://github.com/celery/celery/issues/5200
    """

    requires = ("celery.worker.components:Hub",)

    def start(self, worker) -> None:
        if worker.hub is not None:
            worker.hub.call_repeatedly(TIMER_SWEEP_SECONDS, timers_cancelled_drop, worker.hub.timer)


def timers_cancelled_drop(timer: Timer) -> None:
    """Remove the cancelled entries of `timer`'s queue (a heap), in place, as the loop holds it."""
    queue = timer._queue
    live = [scheduled for scheduled in queue if not scheduled.entry.canceled]
    if len(live) < len(queue):
        heapq.heapify(live)
        queue[:] = live


class JobThreadPool(ThreadTaskPool):
    """Celery's threads pool (many jobs at once in one process), with what the prefork pool gives for free.

    - Time limits: a watchdog thread runs apps/jobs/timelimits.py every WATCH_SECONDS, raising the soft limit
      inside a job's thread and giving up on one past its hard limit; the executor then gets one more thread,
      so the stuck one never holds a slot for ever. Past CONVEYOR_WORKER_ABANDONED_THREADS_MAX such threads,
      the worker restarts.
    - Memory: past CONVEYOR_WORKER_MAX_MEMORY_KB of resident memory the worker stops taking jobs, finishes
      those it has (within the soft shutdown timeout) and exits, for its supervisor to start it again.
    - Shutdown: on SIGTERM (remapped to SIGQUIT, as the Procfile does) running jobs get the soft shutdown
      timeout to finish; those still running then are given up with the process, which exits without
      acknowledging their messages, so RabbitMQ delivers them again and the next worker takes them over.
    - Acknowledgements from the pool's threads share the consumer's connection; py-amqp (5.4.2 and later)
      serializes frame writes with a lock (celery/py-amqp#466).
    Started by `python manage.py run_worker QUEUE` for a queue whose CONVEYOR_QUEUE_POOLS says "threads".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unfinished: set = set()
        self._cancelled = False
        self._abandoned = 0

    def on_start(self) -> None:
        super().on_start()
        self._stopped = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="time-limits", daemon=True)
        self._watchdog.start()

    def on_stop(self) -> None:
        self._stopped.set()
        self._exit_if_cancelled()
        super().on_stop()  # waits for the jobs still running (a warm shutdown)

    def on_apply(self, *args: Any, **kwargs: Any) -> "JobApplyResult":
        future = super().on_apply(*args, **kwargs).f
        self._unfinished.add(future)
        future.add_done_callback(self._unfinished.discard)
        return JobApplyResult(future)

    def terminate_job(self, pid: int, signal: int | None = None) -> None:
        """A thread cannot be stopped: the jobs Celery cancels at a cold shutdown end with the process."""
        self._cancelled = True

    def on_terminate(self) -> None:
        self._exit_if_cancelled()

    def _exit_if_cancelled(self) -> None:
        if self._cancelled and self._unfinished:
            logger.warning("The worker exits with %d job(s) still running; RabbitMQ delivers their messages again "
                           "and the next worker takes them over.", len(self._unfinished))
            os._exit(EX_OK)  # the job threads would otherwise be waited for at the interpreter's exit

    def _watch(self) -> None:
        from django.conf import settings

        from apps.jobs.timelimits import limits_enforce

        while not self._stopped.wait(WATCH_SECONDS):
            try:
                for _ in limits_enforce():
                    self._abandoned += 1
                    self.executor._max_workers += 1  # the next job gets a new thread in the stuck one's place
                if self._abandoned > settings.CONVEYOR_WORKER_ABANDONED_THREADS_MAX:
                    self._restart(f"{self._abandoned} threads are stuck past their jobs' hard time limits")
                resident = _resident_kib()
                if resident > settings.CONVEYOR_WORKER_MAX_MEMORY_KB:
                    self._restart(f"its resident memory is {resident} KiB, over CONVEYOR_WORKER_MAX_MEMORY_KB")
            except Exception:
                logger.exception("The time-limit watchdog failed; it goes on")

    def _restart(self, reason: str) -> None:
        logger.error("The worker restarts: %s. It finishes the jobs it has, then exits for its supervisor "
                     "to start it again.", reason)
        worker_state.should_stop = EX_OK
        self._stopped.set()


class JobApplyResult(ApplyResult):
    """A job submitted to the thread pool; Celery terminates it at a cold shutdown, which a thread cannot be."""

    def terminate(self, signal: int | None = None) -> None:
        pass


def _resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class QueueExecution:
    """How the jobs of one queue run: the pool, how many at once, and the prefetch multiplier."""

    pool: str  # "threads" or "prefork"
    concurrency: int
    prefetch_multiplier: int


def queue_execution(name: str) -> QueueExecution:
    """What CONVEYOR_QUEUE_POOLS, CONVEYOR_QUEUE_CONCURRENCY and CONVEYOR_QUEUE_PREFETCH_MULTIPLIERS say for `name`."""
    from django.conf import settings

    pool = settings.CONVEYOR_QUEUE_POOLS.get(name, "threads")
    if pool not in ("threads", "prefork"):
        raise ValueError(f"CONVEYOR_QUEUE_POOLS gives queue {name!r} the pool {pool!r}; use threads or prefork.")
    return QueueExecution(pool, settings.CONVEYOR_QUEUE_CONCURRENCY.get(name, 32),
                          settings.CONVEYOR_QUEUE_PREFETCH_MULTIPLIERS.get(name, 2))
