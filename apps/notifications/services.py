"""Writes for notifications: send an email, sorting SMTP failures into transient (retried) and permanent."""
import smtplib

from django.core.mail import EmailMessage

from apps.jobs.errors import PermanentJobError, TransientJobError


def _reply_text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _smtp_outcome(exc: Exception) -> Exception:
    """4xx replies and lost connections are worth retrying; 5xx replies are final."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        code, reply = next(iter(exc.recipients.values()))
    elif isinstance(exc, smtplib.SMTPResponseException):
        code, reply = exc.smtp_code, exc.smtp_error
    else:
        return TransientJobError(f"Could not talk to the mail server: {type(exc).__name__}: {exc}")
    answer = f"{code} {_reply_text(reply)}"
    if code >= 500:
        return PermanentJobError(f"The mail server refused the message: {answer}")
    return TransientJobError(f"The mail server answered {answer}; the message will be sent again later.")


def email_send(*, to: str, subject: str, body: str) -> None:
    """Send one message through the configured backend (EMAIL_URL)."""
    try:
        EmailMessage(subject=subject, body=body, to=[to]).send()
    except (smtplib.SMTPException, OSError) as exc:
        raise _smtp_outcome(exc) from None
