"""Valid input of `notifications.send_verification_email`: an unverified user, not emailed too recently."""
import math

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from apps.notifications import selectors


class SendVerificationEmailForm(forms.Form):
    user = forms.ModelChoiceField(
        queryset=get_user_model().objects.filter(is_active=False),
        help_text="The id of an account that has not been verified yet.",
        error_messages={"invalid_choice": "No unverified account has this id; it may be verified already."},
    )

    def clean_user(self) -> AbstractBaseUser:
        user = self.cleaned_data["user"]
        last = selectors.verification_last_requested_at(user=user)
        wait = settings.CONVEYOR_VERIFICATION_RESEND_SECONDS
        if last is not None:
            left = math.ceil(wait - (timezone.now() - last).total_seconds())
            if left > 0:
                raise forms.ValidationError(
                    f"A verification email was sent to {user.email} less than {wait} seconds ago; "
                    f"check your inbox and spam folder, or ask again in {left} seconds."
                )
        return user


def verification_params_from_form(form: SendVerificationEmailForm) -> dict:
    return {"user": form.cleaned_data["user"].pk}
