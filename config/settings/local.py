"""Settings for a developer's machine: debug on, a fixed throwaway secret, loopback only."""
from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="local-only-not-secret-0f6c1d2e9a7b4c3d8e5f")
