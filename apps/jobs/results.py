"""The result backend: django-celery-results' TaskResult rows, each state written in one statement."""
from typing import Any

from celery import states
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

# Written again when a task's row exists (a retry, then its outcome); the row keeps its date_created.
_UPDATED_FIELDS = [
    "status", "result", "traceback", "meta", "content_type", "content_encoding", "date_done",
    "periodic_task_name", "task_name", "task_args", "task_kwargs", "worker",
]


class JobResultBackend(DatabaseBackend):
    """django-db with one INSERT ... ON CONFLICT per result instead of django-celery-results'
    get_or_create (a SELECT, then an INSERT or an UPDATE, in a transaction of its own).

    The fields are those DatabaseBackend._store_result writes; only the write differs. It commits
    synchronously, before Celery acknowledges the message, so it also makes the attempt's earlier
    asynchronous commits durable (see services.transaction_flushed_by_next_commit).
    """

    def _store_result(self, task_id: str, result: Any, status: str, traceback: str | None = None,
                      request: Any = None, using: str | None = None) -> Any:
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {**self._get_meta_from_request(request), "children": self.current_task_children(request)}
        fields = {
            "status": status,
            "result": encoded,
            "traceback": traceback,
            "meta": self.encode_content(meta)[2],
            "content_type": content_type,
            "content_encoding": content_encoding,
        }
        # As in the parent, the extended properties (their traceback included) win.
        fields.update(self._get_extended_properties(request, traceback))
        updated = _UPDATED_FIELDS
        if status == states.STARTED:
            fields["date_started"] = timezone.now()
            updated = [*updated, "date_started"]
        row = TaskResult(task_id=task_id, **fields)
        TaskResult.objects.using(using).bulk_create(
            [row], update_conflicts=True, unique_fields=["task_id"], update_fields=updated
        )
        return encoded
