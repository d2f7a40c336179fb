"""Exceptions job kinds raise to say how a failure should be treated, and those services raise."""
from django.forms import Form


class TransientJobError(Exception):
    """A failure worth retrying with backoff (a timeout, a 503, a lock held elsewhere).

    `retry_after` (seconds) asks for a longer wait than the backoff, as an HTTP Retry-After
    does; the wait is still capped by the kind's backoff cap.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentJobError(Exception):
    """A failure that no retry can fix; the job fails at once with this message."""


class JobCancelled(Exception):
    """Raised inside an interruptible job when an operator cancelled it while it ran."""


class UnknownKind(Exception):
    pass


class JobParamsInvalid(Exception):
    """The kind's form rejected the params; `form` is the bound form, `errors` maps fields to messages."""

    def __init__(self, form: Form):
        super().__init__("The job's parameters are not valid.")
        self.form = form
        self.errors = {name: [str(message) for message in messages] for name, messages in form.errors.items()}


class IdempotencyKeyReused(Exception):
    """The same idempotency key was sent before with a different kind or params."""


class ActionForbidden(Exception):
    """The user may see the job but not act on it (someone else's job, without the permission to change jobs)."""


class SubmissionRefused(Exception):
    """A per-user limit refuses the submission; the message says which and when to try again.

    `retry_after` is the seconds until a submission would be taken, when that is known (the rate), else None.
    """

    def __init__(self, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ActionNotAllowed(Exception):
    """An operator action does not apply to the job in its current state."""


class RunAfterInvalid(Exception):
    """A job's `run_after` is not a time it can wait for (naive, too far ahead, or long past)."""
