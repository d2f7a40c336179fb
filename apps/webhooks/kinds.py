"""Webhook kinds: webhooks.deliver."""
from celery import shared_task
from django.conf import settings

from apps.jobs.executor import JobRun, JobTask
from apps.jobs.registry import JobKind, RetryPolicy, kind_register
from apps.webhooks import forms, selectors, services


@shared_task(base=JobTask, name="webhooks.deliver")
def webhook_deliver_task(run: JobRun) -> dict:
    return services.webhook_deliver(
        job_id=run.job.id,
        created_at=run.job.created_at,
        attempt=run.attempt,
        endpoint_id=run.params["endpoint"],
        event=run.params["event"],
        payload=run.params["payload"],
    )


kind_register(
    JobKind(
        "webhooks.deliver",
        webhook_deliver_task,
        forms.WebhookDeliverForm,
        title="Deliver a webhook",
        description="POSTs a signed JSON event to one of your endpoints; retries timeouts, 5xx and 429.",
        retry=RetryPolicy(
            max_retries=settings.CONVEYOR_WEBHOOK_MAX_RETRIES,
            backoff_base=settings.CONVEYOR_WEBHOOK_BACKOFF_BASE,
            backoff_cap=settings.CONVEYOR_WEBHOOK_BACKOFF_CAP,
        ),
        params_from_form=forms.deliver_params_from_form,
        form_takes_user=True,
        details=selectors.webhook_attempts_of_job,
        detail_template="webhooks/job_detail.html",
    )
)
