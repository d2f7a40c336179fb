"""The valid input of a @task function's job: positional and keyword arguments that JSON carries unchanged (the
one definition of it: the backend's enqueue, the API and the schedule form all check it here)."""
import math
from typing import Any

from django import forms


def json_value_normalized(value: Any, *, path: str) -> Any:
    """`value` as it comes back from JSON, or ValueError naming the first part that would not come back the same.

    Tuples become lists (as Django's own backends do); everything else must be a dict with string keys, a list, a
    string, a whole or finite number, a bool or None: a datetime, a Decimal, a set or a model instance would reach
    the function as something else, or not at all, so they are refused rather than quietly changed."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value!r}, which JSON cannot carry.")
        return value
    if isinstance(value, list | tuple):
        return [json_value_normalized(item, path=f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        normalized = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path} has the key {key!r}; JSON keys are strings, so it would come back as "
                                 f"{str(key)!r}.")
            normalized[key] = json_value_normalized(item, path=f"{path}[{key!r}]")
        return normalized
    raise ValueError(f"{path} is a {type(value).__module__}.{type(value).__qualname__}, which JSON cannot carry; "
                     "pass a string, a number, a list or a dict (an id rather than a model instance, an ISO "
                     "string rather than a datetime).")


def call_arguments_normalized(args: Any, kwargs: Any) -> tuple[list, dict]:
    """(args, kwargs) as JSON carries them, or ValueError saying which one cannot be carried."""
    if not isinstance(args, list | tuple):
        raise ValueError(f"args must be a list, not {type(args).__name__}.")
    if not isinstance(kwargs, dict):
        raise ValueError(f"kwargs must be an object, not {type(kwargs).__name__}.")
    return json_value_normalized(args, path="args"), json_value_normalized(kwargs, path="kwargs")


class TaskCallForm(forms.Form):
    """The params of a @task job: {"args": [...], "kwargs": {...}}, both optional."""

    args = forms.JSONField(required=False, help_text='Positional arguments, a JSON list: [42, "en"]')
    kwargs = forms.JSONField(required=False, help_text='Keyword arguments, a JSON object: {"user_id": 42}')

    def clean_args(self) -> list:
        value = self.cleaned_data["args"]
        try:
            return call_arguments_normalized([] if value is None else value, {})[0]
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_kwargs(self) -> dict:
        value = self.cleaned_data["kwargs"]
        try:
            return call_arguments_normalized([], {} if value is None else value)[1]
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
