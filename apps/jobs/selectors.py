"""Reads of jobs: what a user may see, a job's execution record, API token owners."""
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django_celery_results.models import TaskResult

from apps.jobs.models import ApiToken, Job


def jobs_visible_to(*, user: AbstractBaseUser) -> QuerySet[Job]:
    """Staff see every job; everyone else sees their own."""
    jobs = Job.objects.all()
    return jobs if user.is_staff else jobs.filter(submitted_by=user)


def jobs_filtered(*, user: AbstractBaseUser, status: str = "", kind: str = "") -> QuerySet[Job]:
    jobs = jobs_visible_to(user=user)
    if status:
        jobs = jobs.filter(status=status)
    if kind:
        jobs = jobs.filter(kind=kind)
    return jobs


def job_task_result(*, job: Job) -> TaskResult | None:
    """The Celery execution record of the job's latest attempt (result value and traceback)."""
    return TaskResult.objects.filter(task_id=str(job.id)).first()


def api_token_user(*, token: str) -> AbstractBaseUser | None:
    found = ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash_of(token)).first()
    return found.user if found is not None and found.user.is_active else None
