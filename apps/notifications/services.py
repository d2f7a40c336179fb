"""Writes for notifications: send an email, sorting SMTP failures into transient and permanent."""
import smtplib

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage
from django.template.loader import render_to_string
from django.urls import reverse

from apps.accounts.services import verification_token_make
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


def verification_email_send(*, user_id: int) -> dict:
    """Email the user a fresh signed link that activates the account; nothing to do once verified."""
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        raise PermanentJobError(f"User {user_id} no longer exists; there is no one to verify.")
    if user.is_active:
        return {"sent": False, "reason": "The account is verified already."}
    link = settings.CONVEYOR_SITE_URL.rstrip("/") + reverse(
        "accounts:verify", args=[verification_token_make(user=user)]
    )
    context = {"link": link, "hours": settings.CONVEYOR_VERIFICATION_MAX_AGE // 3600}
    email_send(
        to=user.email,
        subject="Verify your email for Conveyor",
        body=render_to_string("notifications/verification_email.txt", context),
    )
    return {"sent": True, "to": user.email}
