"""The valid input of the account pages (sign up, resend) and of `accounts.send_verification_email`."""
import math

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser
from django.urls import reverse
from django.utils import timezone

from apps.accounts import selectors


class SignupForm(forms.Form):
    # 150: the email is also the username, whose column holds 150 characters.
    email = forms.EmailField(max_length=150)
    password = forms.CharField(
        widget=forms.PasswordInput, help_text=password_validation.password_validators_help_text_html()
    )

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].lower()
        existing = selectors.user_with_email(email=email)
        if existing is not None:
            if existing.is_active:
                raise forms.ValidationError(f"An account with this email exists; sign in at {reverse('login')}.")
            raise forms.ValidationError(
                f"This email is waiting for verification; follow the link we sent, or get a new one at "
                f"{reverse('accounts:resend')}."
            )
        return email

    def clean(self) -> dict:
        data = super().clean()
        if data.get("email") and data.get("password"):
            candidate = get_user_model()(username=data["email"], email=data["email"])
            try:
                password_validation.validate_password(data["password"], user=candidate)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return data


class ResendForm(forms.Form):
    email = forms.EmailField(max_length=150)


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
