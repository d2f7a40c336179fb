"""What the diagnostic kinds do."""
import time
from collections.abc import Callable

from apps.jobs.errors import PermanentJobError, TransientJobError


def diagnostics_sleep(*, seconds: float, steps: int, progress: Callable[[float, str], None]) -> dict:
    for step in range(1, steps + 1):
        time.sleep(seconds / steps)
        progress(100 * step / steps, f"step {step} of {steps}")
    return {"slept": seconds}


def diagnostics_flaky(*, failures: int, attempt: int) -> dict:
    if attempt <= failures:
        raise TransientJobError(f"Planned transient failure {attempt} of {failures}.")
    return {"attempt": attempt}


def diagnostics_fail(*, message: str) -> None:
    raise PermanentJobError(message)
