"""@task functions the tests enqueue on Conveyor: workers and relays import this module (through
tests/integration/kinds_for_tests.py), so each is a kind there too. Their retry policies are in
config/settings/test.py's TASKS OPTIONS, as Django 6.0 users set them (its @task takes no extra arguments)."""
import asyncio
import logging

from apps.tasks.framework import task, task_finished, task_started

logger = logging.getLogger(__name__)


@task
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task(takes_context=True)
def fail_twice(context, label: str) -> dict:
    """Fails with a ConnectionError (retried, per OPTIONS) on its first two attempts."""
    if context.attempt <= 2:
        raise ConnectionError(f"{label}: attempt {context.attempt} cannot connect")
    return {"label": label, "attempt": context.attempt, "workers": len(context.task_result.worker_ids)}


@task
async def add_async(a: int, b: int) -> dict:
    await asyncio.sleep(0.01)
    return {"sum": a + b, "ran_in_a_loop": asyncio.get_running_loop() is not None}


@task
def unserialisable() -> object:
    return {1, 2}


@task(queue_name="reports")
def on_reports() -> str:
    return "reports"


def _log_signal(name: str):
    def receiver(sender, task_result, **kwargs) -> None:
        logger.info("signal %s id=%s status=%s attempts=%d", name, task_result.id, task_result.status,
                    task_result.attempts)
    return receiver


# Kept as module attributes: Django's signals hold their receivers weakly.
on_started, on_finished = _log_signal("task_started"), _log_signal("task_finished")
task_started.connect(on_started)
task_finished.connect(on_finished)
