"""The stock Celery app: results stored by django-celery-results, confirmed publishing; a no-op and a webhook task."""
import requests
from celery import Celery
from kombu import Queue

from bench.baseline import stock_settings

# Not the current app, as the baseline's (bench.baseline.celery).
app = Celery("stock", set_as_current=False)
app.config_from_object(stock_settings, namespace="CELERY")
app.conf.task_queues = [Queue(name, queue_arguments={"x-queue-type": "quorum"})
                        for name in stock_settings.STOCK_QUEUES.values()]
app.conf.task_default_queue = stock_settings.STOCK_QUEUES["results"]


@app.task(name="bench.stock.noop")
def noop_task() -> None:
    return None


@app.task(name="bench.stock.deliver")
def deliver_task(url: str, payload: dict) -> int:
    """POST the event with `requests`, as a team writes it before it needs more: the status code is the result."""
    response = requests.post(url, json=payload, timeout=10)
    response.raise_for_status()
    return response.status_code
