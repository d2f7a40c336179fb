"""Liveness and readiness probes against the real PostgreSQL and RabbitMQ."""
import pytest


@pytest.mark.django_db
def test_healthz_answers_200(client):
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_readyz_answers_200_when_database_and_broker_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_readyz_answers_503_naming_the_broker_when_it_does_not_answer(client, settings):
    from config.celery import app

    # A port nothing listens on stands for a broker that is down (the real stop is in integration).
    original = app.conf.broker_url
    app.conf.broker_url = "amqp://guest:guest@127.0.0.1:1//"
    try:
        response = client.get("/readyz")
        health = client.get("/healthz")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok"
    assert body["broker"].startswith("unavailable: ")
    assert health.status_code == 200


def test_a_cluster_url_lists_every_node_and_the_bootstrap_checks_one_that_answers(settings):
    from apps.ops.bootstrap import broker_nodes, services_required

    # given the failover list `make cluster` prints, whose first node is down and second is this machine's
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//;amqp://guest:guest@127.0.0.1:5672//"
    assert broker_nodes() == [("127.0.0.1", 1), ("127.0.0.1", 5672)]
    # then make run / make test check the node that answers, and never try to start the machine's own node
    rabbitmq = next(service for service in services_required() if service.name == "RabbitMQ")
    assert (rabbitmq.port, rabbitmq.start_commands, rabbitmq.compose_service) == (5672, (), "")
