"""Riding out a PostgreSQL outage: an operation is tried again while the database is unreachable (restarting,
failing over), by the worker, the relay and the web alike, so that losing PostgreSQL for a moment costs no job."""
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import Error, InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What Django raises when PostgreSQL is gone or going: a refused or lost connection, a server shutting down
# (OperationalError), a connection already closed by an earlier failure (InterfaceError). Deadlocks and
# serialization failures are OperationalErrors too, and worth the same second try.
CONNECTION_ERRORS = (OperationalError, InterfaceError)


class DatabaseUnavailable(Exception):
    """PostgreSQL did not answer within the time the caller was willing to wait."""


def database_retried(operation: Callable[[], T], *, wait_seconds: float, what: str) -> T:
    """Run `operation`; while PostgreSQL is unreachable, reconnect and run it again, with a backoff up to
    2 s, for at most `wait_seconds`, then raise DatabaseUnavailable.

    Only outside a transaction: inside one the caller's work is lost with the connection, so the error
    goes to the caller. `operation` must be safe to run again after a failure (one statement, or one that
    checks what the failed try did).
    """
    deadline = time.monotonic() + wait_seconds
    pause = 0.1
    warned = False
    while True:
        try:
            return operation()
        except CONNECTION_ERRORS as exc:
            if connection.in_atomic_block:
                raise
            with contextlib.suppress(Error):  # the next query opens a new connection
                connection.close()
            if time.monotonic() + pause > deadline:
                raise DatabaseUnavailable(f"PostgreSQL did not answer for {wait_seconds:g} s ({what}): {exc}") from exc
            if not warned:
                logger.warning("PostgreSQL is unreachable (%s: %s); %s waits for it up to %g s",
                               type(exc).__name__, str(exc).strip(), what, wait_seconds)
                warned = True
        time.sleep(pause)
        pause = min(2.0, pause * 2)
