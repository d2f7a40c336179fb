"""A @task whose retry policy and time limits come from the decorator: django-tasks 0.11+ (and Django 6.1) pass
its extra keyword arguments to the backend's task class. Imported by its test alone (Django 6.0 refuses them)."""
from apps.tasks.framework import task


@task(retry_on=(TimeoutError,), max_retries=7, soft_time_limit=20, time_limit=25)
def charge(order_id: int) -> None:
    """Charges an order."""
