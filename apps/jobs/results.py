"""The result backend: django-celery-results' TaskResult rows, each state written in one statement."""
from typing import Any

from celery import states
from django.db import connections
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from apps.jobs.rows import row_insert_sql

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
    asynchronous commits durable (see services.transaction_flushed_by_next_commit). A job's
    success is not written here but with the job's own row (services.job_succeed).
    """

    def task_result_row(self, task_id: str, result: Any, status: str, traceback: str | None = None,
                        request: Any = None) -> TaskResult:
        """The TaskResult row Celery's database backend would store for this state (not saved)."""
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
        if status == states.STARTED:
            fields["date_started"] = timezone.now()
        return TaskResult(task_id=task_id, **fields)

    def _store_result(self, task_id: str, result: Any, status: str, traceback: str | None = None,
                      request: Any = None, using: str | None = None) -> Any:
        row = self.task_result_row(task_id, result, status, traceback, request)
        sql, params = task_result_upsert(row)
        with connections[using or "default"].cursor() as cursor:
            cursor.execute(sql, params)
        return row.result


def task_result_upsert(row: TaskResult) -> tuple[str, list]:
    """INSERT ... ON CONFLICT (task_id) DO UPDATE for `row`: the SQL and its parameters, which
    services.job_succeed also writes in one statement with the job's own row."""
    updated = [*_UPDATED_FIELDS, "date_started"] if row.date_started is not None else _UPDATED_FIELDS
    return row_insert_sql(row, conflict_target="task_id", update=updated)
