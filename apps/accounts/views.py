"""Account pages: sign up, follow the verification link, ask for a new link."""
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.accounts import selectors, services
from apps.accounts.forms import ResendForm, SignupForm


class SignInView(LoginView):
    """Django's sign-in page, offering sign-up only while it is open."""

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "signup_open": selectors.signup_open()}


def signup(request: HttpRequest) -> HttpResponse:
    if not selectors.signup_open():
        # The page says so, and a form posted anyway creates nothing.
        status = 200 if request.method == "GET" else 403
        return render(request, "accounts/signup.html", {"closed": services.SIGNUP_CLOSED}, status=status)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = services.user_signup(email=form.cleaned_data["email"], password=form.cleaned_data["password"])
        return render(request, "accounts/signup_done.html", {"email": user.email})
    return render(request, "accounts/signup.html", {"form": form})


def verify(request: HttpRequest, token: str) -> HttpResponse:
    try:
        user = services.user_verify(token=token)
    except services.VerificationFailed as exc:
        return render(request, "accounts/resend.html", {"form": ResendForm(), "problem": str(exc)}, status=400)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    messages.success(request, f"Your email {user.email} is verified; you are signed in.")
    return redirect("jobs:list")


def resend(request: HttpRequest) -> HttpResponse:
    form = ResendForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.verification_resend(email=form.cleaned_data["email"])
        except services.ResendRefused as exc:
            form.add_error("email", str(exc))
        else:
            # The same answer whether or not the address has an account: no one learns who signed up.
            messages.success(request, "If an unverified account has this email, a new link is on its way.")
            return redirect("accounts:resend")
    return render(request, "accounts/resend.html", {"form": form})
