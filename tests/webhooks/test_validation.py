"""The SSRF guard and who may deliver to which endpoint, checked where input arrives."""
import pytest
from django.test import Client

from apps.webhooks.forms import WebhookEndpointForm
from apps.webhooks.models import WebhookEndpoint
from apps.webhooks.ssrf import UrlRefused, webhook_url_check

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/hook", "http://169.254.169.254/latest", "http://[fd00::1]/", "http://0.0.0.0/"]
)
def test_private_link_local_and_reserved_addresses_are_refused(url):
    with pytest.raises(UrlRefused, match="only reach public addresses"):
        webhook_url_check(url)


def test_loopback_is_refused_unless_the_allow_list_names_it(settings):
    webhook_url_check("http://127.0.0.1:9/hook")
    settings.CONVEYOR_WEBHOOK_ALLOWED_PRIVATE = []
    with pytest.raises(UrlRefused, match=r"127\.0\.0\.1"):
        webhook_url_check("http://localhost:9/hook")


def test_endpoint_form_refuses_10_0_0_1_with_a_field_error():
    form = WebhookEndpointForm(data={"url": "http://10.0.0.1/hook", "active": True})
    assert not form.is_valid()
    assert "10.0.0.1 resolves to 10.0.0.1" in form.errors["url"][0]


def test_endpoint_page_adds_an_endpoint_with_a_secret(user):
    client = Client()
    client.force_login(user)
    response = client.post("/webhooks/", {"url": "http://127.0.0.1:8080/hook", "description": "dev", "active": "on"})
    assert response.status_code == 302
    endpoint = WebhookEndpoint.objects.get(owner=user)
    assert len(endpoint.secret) >= 32
    assert endpoint.secret in client.get("/webhooks/").content.decode()


def test_api_refuses_delivery_to_an_endpoint_whose_url_is_now_private(api_client, user):
    endpoint = WebhookEndpoint.objects.create(owner=user, url="http://10.0.0.1/hook")  # saved without validation
    response = api_client.post(
        "/api/jobs/", {"kind": "webhooks.deliver", "params": {"endpoint": endpoint.id, "event": "ping"}},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "only reach public addresses" in response.json()["fields"]["endpoint"][0]


def test_api_refuses_delivery_to_another_users_endpoint(api_client, other_user):
    endpoint = WebhookEndpoint.objects.create(owner=other_user, url="http://127.0.0.1:9/hook")
    response = api_client.post(
        "/api/jobs/", {"kind": "webhooks.deliver", "params": {"endpoint": endpoint.id, "event": "ping"}},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "no active webhook endpoint with this id" in response.json()["fields"]["endpoint"][0]
