"""The SSRF guard: a webhook may reach only public addresses, or hosts the allow-list setting names."""
import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class UrlRefused(Exception):
    """The URL may not be used for webhooks; the message says why and what to change."""


class HostUnresolved(UrlRefused):
    """DNS gave no address for the host: a typo when saving, perhaps an outage when sending."""


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


def webhook_url_check(url: str) -> None:
    """Resolve the URL's host and refuse it (UrlRefused) if any address it names is internal.

    Called when an endpoint is saved and again before every delivery, as DNS may have changed.
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
    for *_, sockaddr in found:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if _is_internal(address) and not _allowed(host, address):
            raise UrlRefused(
                f"{host} resolves to {address}, a loopback, private, link-local or reserved address; "
                "webhooks may only reach public addresses (operators can allow a host with "
                "CONVEYOR_WEBHOOK_ALLOWED_PRIVATE)."
            )
