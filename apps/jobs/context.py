"""The work at hand, for log lines and new jobs: the trace id of the request (or of the job that submitted
the running one) and the id of the job a worker runs. Imported while logging is configured, so it imports
no Django models."""
from contextvars import ContextVar

# The id of the web request being handled, or of the request that submitted the running job; jobs
# submitted meanwhile carry it too. Empty outside both.
trace_id_var: ContextVar[str] = ContextVar("trace_id", default="")
# The job a worker is running, or empty.
job_id_var: ContextVar[str] = ContextVar("job_id", default="")
