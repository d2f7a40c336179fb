"""Django's Tasks API on Conveyor: a backend that records each @task call as a job (apps/tasks/backend.py)."""
