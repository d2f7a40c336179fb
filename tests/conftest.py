"""Fixtures shared by the whole suite: real services checked up front, users, signed-in and API clients; the
processes of tests/processes.py."""
from collections.abc import Callable

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client

from apps.ops.bootstrap import ServiceUnavailable, service_answers, services_required

pytest_plugins = ["tests.processes"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--chaos-jobs", type=int, default=200,
                     help="webhook jobs of the chaos test (tests/integration/test_chaos.py); the suite runs 200")
    parser.addoption("--failover-jobs", type=int, default=300,
                     help="webhook jobs of the failover test (tests/integration/test_cluster_failover.py, make "
                     "test-cluster); it runs 300, the issue's size is 3000")
    parser.addoption("--schedule-slots", type=int, default=20,
                     help="once-a-second slots two schedulers share (tests/schedules/test_two_schedulers.py); "
                     "the suite runs 20, the issue's full minute is 60")


def pytest_sessionstart(session: pytest.Session) -> None:
    # Fail loudly, never skip: the suite is meaningless without the real broker and database.
    import django

    django.setup()
    missing = [service for service in services_required() if not service_answers(service, timeout=3)]
    if missing:
        names = ", ".join(f"{service.name} on {service.host}:{service.port}" for service in missing)
        message = f"Cannot reach {names}. Run `make test`, which starts them or says what to install."
        raise pytest.UsageError(str(ServiceUnavailable(message)))


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-pass-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-pass-123")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("carol", password="carol-pass-123", is_staff=True)


@pytest.fixture
def bearer_client(db) -> Callable[[AbstractBaseUser], Client]:
    """Makes a client authenticated with a new, real bearer token of the user it is given."""
    from apps.jobs.services import api_token_create

    def make(user: AbstractBaseUser) -> Client:
        token, _ = api_token_create(username=user.username)
        return Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    return make


@pytest.fixture
def api_client(user, bearer_client) -> Client:
    """A client authenticated with a real bearer token of `user`."""
    return bearer_client(user)


@pytest.fixture
def signed_in(user) -> Client:
    """A browser-like client with `user`'s session."""
    client = Client()
    client.force_login(user)
    return client
