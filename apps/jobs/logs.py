"""Per-job logs: the records a job emits while an attempt runs, held in memory (bounded) until it ends.

`JobLogHandler` sits on the root logger (settings' LOGGING) and does nothing outside an attempt;
imported while logging is configured, so this module imports no Django models.
"""
import logging
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime


class JobLogBuffer:
    """The newest `max_lines` records of one attempt; older ones are counted, then dropped."""

    def __init__(self, *, max_lines: int, max_chars: int):
        self._lines: deque[dict] = deque(maxlen=max_lines)
        self._max_chars = max_chars
        self.dropped = 0

    def add(self, record: logging.LogRecord, message: str) -> None:
        if len(self._lines) == self._lines.maxlen:
            self.dropped += 1
        if len(message) > self._max_chars:
            message = f"{message[: self._max_chars]}… ({len(message) - self._max_chars} characters cut)"
        self._lines.append(
            {
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname,
                "logger": record.name,
                "message": message,
            }
        )

    def __bool__(self) -> bool:
        return bool(self._lines)

    def lines(self) -> list[dict]:
        """The kept lines, oldest first, after a marker line when older ones were dropped."""
        lines = list(self._lines)
        if self.dropped and lines:
            marker = {
                "time": lines[0]["time"],
                "level": "WARNING",
                "logger": "conveyor",
                "message": f"… {self.dropped} earlier log lines dropped; "
                f"the last {self._lines.maxlen} are kept (CONVEYOR_JOB_LOG_MAX_LINES).",
            }
            lines.insert(0, marker)
        return lines


_buffer: ContextVar[JobLogBuffer | None] = ContextVar("job_log_buffer", default=None)


class JobLogHandler(logging.Handler):
    """Copies each record into the running attempt's buffer, if any; memory only, no I/O."""

    def emit(self, record: logging.LogRecord) -> None:
        buffer = _buffer.get()
        if buffer is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            buffer.add(record, message)
        except Exception:
            self.handleError(record)


@contextmanager
def job_log_capture(*, max_lines: int, max_chars: int) -> Iterator[JobLogBuffer]:
    """Collect the records emitted in this context (this thread or task) into a new buffer."""
    buffer = JobLogBuffer(max_lines=max_lines, max_chars=max_chars)
    token = _buffer.set(buffer)
    try:
        yield buffer
    finally:
        _buffer.reset(token)
