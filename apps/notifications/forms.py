"""Valid input of `notifications.send_verification_email`: an unverified user, not emailed too recently."""
import math

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from apps.notifications import selectors


class SendVerificationEmailForm(forms.Form):
    # An id, not a choice list: the kinds API lists choices, and unverified accounts are nobody's business.
    user = forms.IntegerField(min_value=1, help_text="The id of an account that has not been verified yet.")

    def clean_user(self) -> AbstractBaseUser:
        user = get_user_model().objects.filter(pk=self.cleaned_data["user"], is_active=False).first()
        if user is None:
            raise forms.ValidationError("No unverified account has this id; it may be verified already.")
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
