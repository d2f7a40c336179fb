"""The valid input of each diagnostic kind (serves the HTML form and the API alike)."""
from django import forms


class NoopForm(forms.Form):
    pass


class SleepForm(forms.Form):
    seconds = forms.FloatField(min_value=0, max_value=3600, initial=5, help_text="How long to sleep.")
    steps = forms.IntegerField(
        min_value=1, max_value=1000, initial=10, required=False, help_text="Progress reports along the way."
    )


class FlakyForm(forms.Form):
    failures = forms.IntegerField(
        min_value=0, max_value=20, initial=2, help_text="Transient failures before the job succeeds."
    )


class FailForm(forms.Form):
    message = forms.CharField(max_length=500, initial="This job always fails.", help_text="The error to fail with.")
