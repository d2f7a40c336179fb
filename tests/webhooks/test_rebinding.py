"""DNS rebinding: a delivery connects only to an address the SSRF guard checked, by its host name."""
import pytest
import requests

from apps.jobs.errors import PermanentJobError, TransientJobError
from apps.jobs.models import Job
from apps.webhooks.services import webhook_deliver
from apps.webhooks.ssrf import PinnedAddressAdapter, webhook_post, webhook_url_check

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.216.34"


@pytest.fixture
def deliver(user, endpoint_for):
    """Run one delivery attempt in this process, to a URL saved without validation (no lookup)."""

    def run(url: str) -> dict:
        job = Job.objects.create(kind="webhooks.deliver", queue="default", submitted_by=user)
        return webhook_deliver(
            job_id=job.id, created_at=job.created_at, attempt=1, endpoint_id=endpoint_for(url).id,
            event="order.paid", payload={},
        )

    return run


def test_a_name_that_rebinds_to_loopback_after_the_check_is_only_sent_to_the_checked_public_address(
    resolver, receiver, deliver, settings
):
    # given a name that answers a public address to the first lookup and loopback to later ones
    settings.CONVEYOR_WEBHOOK_ALLOWED_PRIVATE = []
    resolver.answer("rebind.example", [PUBLIC], ["127.0.0.1"])
    # when an event is delivered to it (the public address is unreachable here: no internet)
    with pytest.raises(TransientJobError, match=r"Could not deliver to http://rebind\.example"):
        deliver(f"http://rebind.example:{receiver.port}/hook")
    # then the name was looked up once and only the checked address was tried
    assert resolver.lookups == ["rebind.example"]
    assert resolver.connected == [(PUBLIC, receiver.port)]
    assert receiver.received == []


def test_a_name_that_answers_loopback_to_the_check_is_refused_when_loopback_is_not_allowed(
    resolver, receiver, deliver, settings
):
    settings.CONVEYOR_WEBHOOK_ALLOWED_PRIVATE = []
    resolver.answer("rebind.example", ["127.0.0.1"], [PUBLIC])
    with pytest.raises(PermanentJobError, match=r"rebind\.example resolves to 127\.0\.0\.1"):
        deliver(f"http://rebind.example:{receiver.port}/hook")
    assert resolver.connected == []
    assert receiver.received == []


def test_a_name_that_answers_allowed_loopback_to_the_check_is_delivered_there_with_its_name_as_host(
    resolver, receiver, deliver
):
    # given loopback allowed (the test settings) and a name that answers it first, a public address later
    resolver.answer("rebind.example", ["127.0.0.1"], [PUBLIC])
    receiver.answer((200, {}, b"ok"))
    # when an event is delivered
    result = deliver(f"http://rebind.example:{receiver.port}/hook")
    # then it reached the checked address, named by the URL's host
    assert result["status_code"] == 200
    assert resolver.connected == [("127.0.0.1", receiver.port)]
    assert [r.headers["Host"] for r in receiver.received] == [f"rebind.example:{receiver.port}"]


def test_one_internal_address_among_the_answers_refuses_the_url(resolver, deliver, settings):
    settings.CONVEYOR_WEBHOOK_ALLOWED_PRIVATE = []
    resolver.answer("mixed.example", [PUBLIC, "10.0.0.1"])
    with pytest.raises(PermanentJobError, match=r"mixed\.example resolves to 10\.0\.0\.1"):
        deliver("http://mixed.example/hook")
    assert resolver.connected == []


def test_the_checked_addresses_are_tried_in_order_until_one_accepts_without_a_new_lookup(
    resolver, receiver, deliver
):
    resolver.answer("multi.example", ["127.0.0.2", "127.0.0.1"], [PUBLIC])
    receiver.answer((200, {}, b"ok"))
    assert deliver(f"http://multi.example:{receiver.port}/hook")["status_code"] == 200
    assert resolver.lookups == ["multi.example"]
    assert resolver.connected == [("127.0.0.2", receiver.port), ("127.0.0.1", receiver.port)]


def test_an_https_pool_connects_to_the_address_and_verifies_the_certificate_for_the_host_name():
    adapter = PinnedAddressAdapter(PUBLIC)
    request = requests.Request("POST", "https://hooks.example/hook").prepare()
    pool = adapter.get_connection_with_tls_context(request, verify=True)
    adapter.cert_verify(pool, request.url, verify=True, cert=None)
    assert (pool.host, pool.port) == (PUBLIC, 443)
    assert pool.conn_kw["server_hostname"] == "hooks.example"
    assert pool.cert_reqs == "CERT_REQUIRED"


def test_https_sends_the_host_name_as_sni_and_host_and_accepts_its_certificate(
    resolver, tls_receiver, certificates, monkeypatch
):
    # given an HTTPS receiver on 127.0.0.1 whose certificate, from a CA trusted here, names hooks.example
    monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", str(certificates.ca))
    resolver.answer("hooks.example", ["127.0.0.1"])
    tls_receiver.answer((200, {}, b"ok"))
    # when an event is posted to hooks.example
    checked = webhook_url_check(f"https://hooks.example:{tls_receiver.port}/hook")
    with webhook_post(checked, data=b"{}", headers={}, timeout=(3, 3)) as response:
        status = response.status_code
    # then TLS named the host, not the address, and the certificate for it was accepted
    assert status == 200
    assert tls_receiver.server_names == ["hooks.example"]
    assert [r.headers["Host"] for r in tls_receiver.received] == [f"hooks.example:{tls_receiver.port}"]


def test_https_refuses_a_certificate_that_does_not_name_the_host(resolver, tls_receiver, certificates, monkeypatch):
    # given the same receiver reached as other.example: its certificate is valid, but not for that name
    monkeypatch.setattr(requests.adapters, "DEFAULT_CA_BUNDLE_PATH", str(certificates.ca))
    resolver.answer("other.example", ["127.0.0.1"])
    checked = webhook_url_check(f"https://other.example:{tls_receiver.port}/hook")
    with pytest.raises(requests.exceptions.SSLError, match="Hostname mismatch"):
        webhook_post(checked, data=b"{}", headers={}, timeout=(3, 3))
    assert tls_receiver.received == []
