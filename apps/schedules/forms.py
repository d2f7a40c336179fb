"""The admin's schedule form: a kind from the registry, and params its own form accepts (one definition of valid
input per kind, as for the API and the pages)."""
import json

from django import forms

from apps.jobs.errors import JobParamsInvalid
from apps.jobs.registry import kind_get, kinds_all
from apps.jobs.services import job_params_clean
from apps.schedules.models import JobSchedule


class JobScheduleForm(forms.ModelForm):
    kind = forms.ChoiceField(help_text="A job kind, or a @task function (named by its import path).")

    class Meta:
        model = JobSchedule
        fields = ["name", "kind", "params", "crontab", "interval", "catch_up", "enabled", "description"]
        help_texts = {"params": 'The job\'s params as JSON, as the API takes them; for a @task: {"args": [...], '
                                '"kwargs": {...}}.'}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [(kind.name, f"{kind.name} — {kind.title}") for kind in kinds_all()]
        if self.instance.pk and self.instance.kind not in dict(self.fields["kind"].choices):
            # A kind this process no longer has: shown, so the operator sees what to change.
            self.fields["kind"].choices.append((self.instance.kind, f"{self.instance.kind} (unknown here)"))

    def clean(self) -> dict:
        cleaned = super().clean()
        if bool(cleaned.get("crontab")) == bool(cleaned.get("interval")):
            raise forms.ValidationError("Choose a crontab or an interval, not both.")
        kind, params = cleaned.get("kind"), cleaned.get("params")
        if kind and isinstance(params, dict):
            try:
                cleaned["params"], _ = job_params_clean(kind=kind_get(kind), params=params)
            except JobParamsInvalid as exc:
                self.add_error("params", f"Not valid for {kind}: {json.dumps(exc.errors)}")
        elif params is not None and not isinstance(params, dict):
            self.add_error("params", "Params are a JSON object.")
        return cleaned
