"""Who did what to which object, and when: operator actions written to Django's admin log (LogEntry).

The admin records its own saves and deletions there; actions that are not saves (a job retried or cancelled,
the dead queue re-driven, a schedule paused) are recorded by `operator_action_record`, wherever they are
done: admin pages and bulk actions, the job pages, the JSON API. They show on each object's History page in
the admin and in the admin's "Recent actions".
"""
from collections.abc import Iterable

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Model


def operator_action_record(*, user: AbstractBaseUser, objects: Iterable[Model], message: str) -> None:
    """Record that `user` did `message` (e.g. "retry: failed → queued") to each of `objects`, now.

    One INSERT for any number of objects; in the caller's transaction, so an action and its record commit
    together.
    """
    objects = list(objects)
    if objects:
        LogEntry.objects.log_actions(user_id=user.pk, queryset=objects, action_flag=CHANGE, change_message=message)
