"""The worker's own parts: events published without confirms, and cancelled timers swept away."""
from types import SimpleNamespace

from kombu.asynchronous.timer import Timer

from config.celery import app as celery_app
from config.worker import JobConsumer, timers_cancelled_drop


def test_the_workers_event_connection_skips_confirms_that_every_other_connection_keeps():
    # given the consumer class the worker runs (CELERY_WORKER_CONSUMER)
    assert celery_app.conf.worker_consumer == "config.worker:JobConsumer"
    consumer = SimpleNamespace(app=celery_app, ensure_connected=lambda connection: connection)
    # when it opens its connection for writing (the event dispatcher's), and the app opens one
    events = JobConsumer.connection_for_write(consumer)
    jobs = celery_app.connection_for_write()
    # then only the events' connection publishes without waiting for RabbitMQ's confirm
    assert events.transport_options["confirm_publish"] is False
    assert jobs.transport_options["confirm_publish"] is True


def test_the_worker_sweeps_cancelled_timers_and_keeps_the_others_in_order():
    # given the event loop's timer with five time limits, three of them cancelled (their jobs ended)
    assert "config.worker:CancelledTimersSweep" in celery_app.steps["worker"]
    timer = Timer()
    entries = {seconds: timer.call_after(seconds, print) for seconds in (50, 10, 30, 20, 40)}
    for seconds in (50, 30, 40):
        timer.cancel(entries[seconds])
    # when the sweep runs
    timers_cancelled_drop(timer)
    # then only the two live timers are left, the next one due still first
    assert [scheduled.entry for scheduled in timer.queue] == [entries[10], entries[20]]
    assert timer._queue[0].entry is entries[10]


def test_the_worker_declares_no_delay_queues_since_retries_wait_in_the_outbox():
    steps = JobConsumer.Blueprint.default_steps
    assert not any(step.endswith(":DelayedDelivery") for step in steps)
    assert any(step.endswith(":Tasks") for step in steps)  # the rest of Celery's consumer is there
