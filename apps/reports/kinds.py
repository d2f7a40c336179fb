"""Report kinds: reports.csv_summary, on its own `reports` queue."""
from celery import shared_task
from django.conf import settings

from apps.jobs.executor import JobRun, JobTask
from apps.jobs.registry import JobKind, kind_register
from apps.reports import forms, services


@shared_task(base=JobTask, name="reports.csv_summary")
def csv_summary_task(run: JobRun) -> dict:
    return services.report_csv_summarize(
        job_id=run.job.id,
        group_by=run.params["group_by"],
        value_column=run.params["value_column"],
        progress=run.progress,
    )


kind_register(
    JobKind(
        "reports.csv_summary",
        csv_summary_task,
        forms.CsvSummaryForm,
        title="CSV summary report",
        description="Count, sum, mean, min and max of a numeric column per group of another column.",
        # Long reports wait and run on their own queue and worker; short jobs never queue behind them.
        queue="reports",
        soft_time_limit=settings.CONVEYOR_REPORT_TIME_LIMIT,
        time_limit=settings.CONVEYOR_REPORT_TIME_LIMIT + 30,
        params_from_form=forms.csv_summary_params_from_form,
        files_save=services.report_upload_store,
        files=services.report_files,
        detail_template="reports/job_detail.html",
    )
)
