"""Log context for every line, web and worker: the trace id and job id, and the JSON line format.

Settings' LOGGING puts `LogContextFilter` on every handler, so each record carries `trace_id` and
`job_id` (or "-"); imported while logging is configured, so this module imports no Django models.
"""
import json
import logging
from datetime import UTC, datetime

from apps.jobs.context import job_id_var, trace_id_var


class LogContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id = trace_id_var.get() or "-"
        record.job_id = job_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors in production."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", "-"),
            "job_id": getattr(record, "job_id", "-"),
            "process": record.process,
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
