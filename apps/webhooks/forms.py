"""Valid input for endpoints (owner page, admin) and for the `webhooks.deliver` kind (form and API)."""
import json

from django import forms
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.urls import reverse

from apps.webhooks import selectors
from apps.webhooks.models import WebhookEndpoint
from apps.webhooks.ssrf import UrlRefused, webhook_url_check


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https", help_text="Where events are POSTed.")

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "active"]


class WebhookDeliverForm(forms.Form):
    endpoint = forms.ModelChoiceField(
        queryset=WebhookEndpoint.objects.none(), help_text="One of your active endpoints (its id in the API)."
    )
    event = forms.RegexField(
        regex=r"^[A-Za-z0-9_.:-]{1,100}$",
        initial="ping",
        help_text="The event type, e.g. order.paid.",
        error_messages={"invalid": "Use 1 to 100 letters, digits, dots, colons, dashes or underscores."},
    )
    payload = forms.JSONField(required=False, initial={}, help_text="The event's data: any JSON value.")

    def __init__(self, *args, user: AbstractBaseUser | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["endpoint"]
        field.queryset = selectors.webhook_endpoints_active_of(user=user)
        field.error_messages["invalid_choice"] = (
            f"You have no active webhook endpoint with this id; add one at {reverse('webhooks:list')}."
        )

    def clean_endpoint(self) -> WebhookEndpoint:
        endpoint = self.cleaned_data["endpoint"]
        # The URL was checked when saved; DNS may point elsewhere now.
        try:
            webhook_url_check(endpoint.url)
        except UrlRefused as exc:
            raise forms.ValidationError(str(exc), code="url_refused") from None
        return endpoint

    def clean_payload(self) -> object:
        payload = self.cleaned_data["payload"]
        size = len(json.dumps(payload).encode())
        if size > settings.CONVEYOR_WEBHOOK_MAX_PAYLOAD_BYTES:
            raise forms.ValidationError(
                f"The payload is {size} bytes as JSON; the limit is {settings.CONVEYOR_WEBHOOK_MAX_PAYLOAD_BYTES}."
            )
        return payload


def deliver_params_from_form(form: WebhookDeliverForm) -> dict:
    data = form.cleaned_data
    return {"endpoint": data["endpoint"].pk, "event": data["event"], "payload": data["payload"]}
