"""The baseline: a bare Django view that calls `task.delay()` and a stock Celery worker, no results."""
