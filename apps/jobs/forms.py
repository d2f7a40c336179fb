"""The part of the job form every kind shares: when the job may start."""
from django import forms
from django.utils import timezone

from apps.jobs.errors import RunAfterInvalid
from apps.jobs.services import job_run_after_check


class RunAfterForm(forms.Form):
    """An optional start time, shown under each kind's own form; the rule is job_run_after_check's."""

    run_after = forms.DateTimeField(
        required=False,
        label="Run after",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 1}, format="%Y-%m-%dT%H:%M:%S"),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The browser sends a wall-clock time with no offset; Django reads it in the site's time zone.
        self.fields["run_after"].help_text = (
            f"Leave empty to run now. In {timezone.get_current_timezone_name()}; the job waits as scheduled until then."
        )

    def clean_run_after(self):
        run_after = self.cleaned_data["run_after"]
        try:
            job_run_after_check(run_after=run_after)
        except RunAfterInvalid as exc:
            raise forms.ValidationError(str(exc)) from None
        return run_after
