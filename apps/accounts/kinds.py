"""Account kinds: accounts.send_verification_email."""
from celery import shared_task
from django.conf import settings

from apps.accounts import forms, services
from apps.accounts.selectors import VERIFY_KIND
from apps.jobs.executor import JobRun, JobTask
from apps.jobs.registry import JobKind, RetryPolicy, kind_register


@shared_task(base=JobTask, name=VERIFY_KIND)
def send_verification_email_task(run: JobRun) -> dict:
    return services.verification_email_send(user_id=run.params["user"])


kind_register(
    JobKind(
        VERIFY_KIND,
        send_verification_email_task,
        forms.SendVerificationEmailForm,
        title="Send a verification email",
        description="Emails an unverified account a signed link that activates it; retries 4xx SMTP replies.",
        retry=RetryPolicy(
            max_retries=settings.CONVEYOR_EMAIL_MAX_RETRIES,
            backoff_base=settings.CONVEYOR_EMAIL_BACKOFF_BASE,
            backoff_cap=settings.CONVEYOR_EMAIL_BACKOFF_CAP,
        ),
        params_from_form=forms.verification_params_from_form,
    )
)
