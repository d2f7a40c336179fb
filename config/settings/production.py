"""Production settings: a secret and hosts are required, HTTPS everywhere."""
from config.settings.base import *  # noqa: F403
from config.settings.base import env

# No defaults: a missing value stops the process at start with ImproperlyConfigured.
SECRET_KEY = env("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
DEBUG = False

# https://docs.djangoproject.com/en/5.2/howto/deployment/checklist/
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
# /healthz and /readyz are probed over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# Production logs are JSON lines for a log collector, unless CONVEYOR_LOG_FORMAT says otherwise.
CONVEYOR_LOG_FORMAT = env("CONVEYOR_LOG_FORMAT", default="json")
LOGGING["handlers"]["console"]["formatter"] = CONVEYOR_LOG_FORMAT  # noqa: F405
