"""The SSRF guard: a webhook may reach only public addresses, or hosts the allow-list setting names,
and a delivery connects only to an address the guard checked."""
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError


class UrlRefused(Exception):
    """The URL may not be used for webhooks; the message says why and what to change."""


class HostUnresolved(UrlRefused):
    """DNS gave no address for the host: a typo when saving, perhaps an outage when sending."""


@dataclass(frozen=True)
class CheckedUrl:
    """A URL and every address its host resolved to, each one checked, in the resolver's order."""

    url: str
    addresses: tuple[str, ...]


def _allowed(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    for entry in settings.CONVEYOR_WEBHOOK_ALLOWED_PRIVATE:
        if entry.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:  # a host name, not a network
            continue
    return False


def _is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def webhook_url_check(url: str) -> CheckedUrl:
    """Resolve the URL's host and refuse it (UrlRefused) if any address it names is internal.

    Called when an endpoint is saved and again before every delivery, as DNS may have changed; a
    delivery then connects only to the addresses returned here (webhook_post).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UrlRefused(f"Use an http:// or https:// URL (got {parts.scheme or 'no'} scheme).")
    host = parts.hostname
    if not host:
        raise UrlRefused("The URL has no host name.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except ValueError:
        raise UrlRefused("The URL's port is not a number from 1 to 65535.") from None
    except OSError as exc:
        raise HostUnresolved(f"The host {host!r} could not be resolved ({exc.strerror or exc}).") from None
    addresses: list[str] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if _is_internal(address) and not _allowed(host, address):
            raise UrlRefused(
                f"{host} resolves to {address}, a loopback, private, link-local or reserved address; "
                "webhooks may only reach public addresses (operators can allow a host with "
                "CONVEYOR_WEBHOOK_ALLOWED_PRIVATE)."
            )
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    if not addresses:
        raise HostUnresolved(f"The host {host!r} could not be resolved (no address).")
    return CheckedUrl(url=url, addresses=tuple(addresses))


def _host_header(url: str) -> str:
    """What http.client would have sent: the host name, and the port unless it is the scheme's default."""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default_port = 443 if parts.scheme == "https" else 80
    return host if parts.port in (None, default_port) else f"{host}:{parts.port}"


class PinnedAddressAdapter(HTTPAdapter):
    """Connects to one checked address, while the URL's host name stays in the Host header, in SNI
    and in certificate verification.

    Plain requests would resolve the host again when connecting, so a DNS answer that changed after
    the check (rebinding) would reach an address nobody checked. The overrides are the hooks
    requests documents for subclasses (requests 2.32+).
    """

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            # urllib3 sends server_hostname as SNI and the ssl module matches the certificate against
            # it. Not assert_hostname: that turns the ssl module's own check off for urllib3's.
            pool_kwargs["server_hostname"] = host_params["host"]
        host_params["host"] = self.address
        return host_params, pool_kwargs

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        # Without it, http.client would name the address it connected to.
        request.headers["Host"] = _host_header(request.url)


def _not_connected(error: requests.ConnectionError) -> bool:
    """The connection was refused, unreachable or timed out: nothing was sent to that address."""
    reason = getattr(error.args[0] if error.args else None, "reason", None)
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _post_at(address: str, url: str, **kwargs: Any) -> requests.Response:
    with requests.Session() as session:
        # Proxy variables and .netrc are ignored: a proxy would resolve the host again itself, and
        # credentials meant for other hosts have no business in a webhook.
        session.trust_env = False
        adapter = PinnedAddressAdapter(address)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # Redirects are not followed: the target was never checked by the SSRF guard.
        return session.post(url, allow_redirects=False, stream=True, **kwargs)


def webhook_post(
    checked: CheckedUrl, *, data: bytes, headers: dict[str, str], timeout: tuple[float, float]
) -> requests.Response:
    """POST to the checked URL, streamed, at its checked addresses in the resolver's order until one
    accepts the connection, as requests does over the addresses it resolves itself.

    Raises what requests raises; each address gets the whole connect timeout.
    """
    *others, last = checked.addresses
    for address in others:
        try:
            return _post_at(address, checked.url, data=data, headers=headers, timeout=timeout)
        except requests.ConnectionError as exc:
            if not _not_connected(exc):
                raise
    return _post_at(last, checked.url, data=data, headers=headers, timeout=timeout)
