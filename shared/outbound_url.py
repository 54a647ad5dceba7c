"""Checks for URLs we were given and will call (an onboarding system's callbackUrl): https only, and never
loopback, private, link-local or otherwise non-public addresses (design.md invariant 4). A local-development
setting (OUTBOUND_ALLOW_LOOPBACK) lets loopback through so tests can run a receiver on 127.0.0.1.

`check_url` is the static check done when the URL is accepted; `resolve_public` repeats it against what
the name resolves to right before each call, so a name that later points inside the network is refused.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
_BLOCKED_NAMES = ("localhost", ".localhost", ".local", ".internal", ".home.arpa")


class UnsafeUrl(ValueError):
    """The URL is not an https URL to a public address; the message says why."""


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return allow_loopback
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_link_local)


def check_url(url: str, *, allow_loopback: bool = False) -> str:
    """The host name of `url` when it is acceptable as given; UnsafeUrl otherwise (no DNS lookup)."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("is not a valid URL") from None
    if parts.scheme != "https":
        raise UnsafeUrl("must be an https URL")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host or parts.username is not None or parts.password is not None:
        raise UnsafeUrl("must name a host and carry no credentials")
    if port == 0 or any(ord(c) < 33 for c in url):
        raise UnsafeUrl("is not a valid URL")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(_BLOCKED_NAMES) or "." not in host:
            if not (allow_loopback and host == "localhost"):
                raise UnsafeUrl("must point at a public host") from None
        return host
    if not _address_allowed(address, allow_loopback):
        raise UnsafeUrl("must not point at a loopback, private, link-local or reserved address")
    return host


def resolve_public(url: str, *, allow_loopback: bool = False) -> None:
    """Check `url` and every address its host resolves to; UnsafeUrl when any is not public or none resolves."""
    host = check_url(url, allow_loopback=allow_loopback)
    port = urlsplit(url).port or 443
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise UnsafeUrl("host does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not _address_allowed(address, allow_loopback):
            raise UnsafeUrl("host resolves to a loopback, private, link-local or reserved address")
