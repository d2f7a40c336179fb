"""Liveness and readiness probes against the real PostgreSQL and RabbitMQ."""
import time
from urllib.parse import urlsplit

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


@pytest.mark.django_db
def test_readyz_of_a_cluster_names_each_node_and_is_ready_while_any_answers(client):
    from apps.jobs.probes import PROBE_TIMEOUT_SECONDS
    from config.celery import app

    original = app.conf.broker_url
    answering = urlsplit(original)
    here = f"{answering.hostname}:{answering.port or 5672}"
    try:
        # given a failover list whose first node is down (a port nothing listens on) and whose second answers
        app.conf.broker_url = f"amqp://guest:guest@127.0.0.1:1//;{original}"
        one_down = client.get("/readyz")
        # and one whose nodes are all down
        app.conf.broker_url = "amqp://guest:guest@127.0.0.1:1//;amqp://guest:guest@127.0.0.1:2//"
        began = time.monotonic()
        all_down = client.get("/readyz")
        took = time.monotonic() - began
    finally:
        app.conf.broker_url = original
    # then the cluster is ready while one node answers, and the answer says which node does and which does not
    assert one_down.status_code == 200
    body = one_down.json()
    assert (body["database"], body["broker"], body["broker_nodes"][here]) == ("ok", "ok", "ok")
    assert body["broker_nodes"]["127.0.0.1:1"].startswith("unavailable: ConnectionRefusedError")
    # and not ready once none answers, each node named; a refused node is tried once, not waited for again
    assert all_down.status_code == 503
    body = all_down.json()
    assert body["broker"] == "unavailable: none of its 2 nodes answers"
    assert sorted(body["broker_nodes"]) == ["127.0.0.1:1", "127.0.0.1:2"]
    assert all(answer.startswith("unavailable: ") for answer in body["broker_nodes"].values())
    assert took < PROBE_TIMEOUT_SECONDS


def test_a_cluster_url_lists_every_node_and_the_bootstrap_checks_one_that_answers(settings):
    from apps.ops.bootstrap import broker_nodes, services_required

    # given the failover list `make cluster` prints, whose first node is down and second is this machine's
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//;amqp://guest:guest@127.0.0.1:5672//"
    assert broker_nodes() == [("127.0.0.1", 1), ("127.0.0.1", 5672)]
    # then make run / make test check the node that answers, and never try to start the machine's own node
    rabbitmq = next(service for service in services_required() if service.name == "RabbitMQ")
    assert (rabbitmq.port, rabbitmq.start_commands, rabbitmq.compose_service) == (5672, (), "")
