"""The side-by-side benchmark: Conveyor against a plain Celery + Django setup, in one run."""
