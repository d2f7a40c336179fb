"""Settings for a developer's machine: debug on, a fixed throwaway secret, loopback only."""
from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="local-only-not-secret-0f6c1d2e9a7b4c3d8e5f")

# Webhooks may reach services on this machine (a receiver under development, a test server).
CONVEYOR_WEBHOOK_ALLOWED_PRIVATE = env.list(
    "CONVEYOR_WEBHOOK_ALLOWED_PRIVATE", default=["localhost", "127.0.0.0/8", "::1/128"]
)
# Mail is printed by the worker unless EMAIL_URL names a real server.
if not env("EMAIL_URL", default=""):
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
