"""The baselines: `delay()` views (bare and confirmed), a results-off worker, and the stock Celery + results setup."""
