"""Sign-up and resend forms: the valid input of the account pages."""
from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.urls import reverse

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
