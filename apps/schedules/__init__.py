"""Schedules that make ordinary Conveyor jobs: one job per due slot, whatever number of schedulers run."""
