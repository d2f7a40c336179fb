"""What the diagnostic kinds do."""
import logging
import time
from collections.abc import Callable

from apps.jobs.errors import PermanentJobError, TransientJobError

logger = logging.getLogger(__name__)


def diagnostics_sleep(*, seconds: float, steps: int, progress: Callable[[float, str], None]) -> dict:
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        logger.info("Slept step %d of %d.", step, steps)
        progress(100 * step / steps, f"step {step} of {steps}")
    return {"slept": seconds}


def diagnostics_flaky(*, failures: int, attempt: int) -> dict:
    logger.info("Attempt %d; planned to fail %d time(s).", attempt, failures)
    if attempt <= failures:
        raise TransientJobError(f"Planned transient failure {attempt} of {failures}.")
    return {"attempt": attempt}


def diagnostics_fail(*, message: str) -> None:
    logger.warning("Failing on purpose: %s", message)
    raise PermanentJobError(message)
