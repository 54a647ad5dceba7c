"""Checks for URLs we were given and will call (an onboarding system's callbackUrl): https only, and only
to globally routable unicast addresses (docs/ARCHITECTURE.md, invariant 4; OWASP Server-Side Request Forgery Prevention
Cheat Sheet). A local-development setting (OUTBOUND_ALLOW_LOOPBACK) lets loopback, and only loopback,
through so tests can run a receiver on 127.0.0.1.

`check_url` is the static check done when the URL is accepted (no DNS). `resolve_public` is the check done
right before a call: it resolves the name once, vets every address it answers, and returns one of them;
the caller connects to that address (shared.outbound_http), so a name that answers a public address to
the check and an internal one to the connect (DNS rebinding) never reaches the internal one.

IPv6 forms that carry an IPv4 address are unwrapped and the IPv4 address is vetted too: IPv4-mapped
(::ffff:a.b.c.d) and the deprecated IPv4-compatible (::a.b.c.d) form (RFC 4291 §2.5.5), the NAT64
well-known prefix 64:ff9b::/96 (RFC 6052 §2.1), 6to4 2002::/16 (RFC 3056 §2) and Teredo 2001::/32
(RFC 4380 §4). Without this, 2002:a9fe:a9fe::1 is a "global" address that a 6to4 relay turns into
169.254.169.254, the cloud metadata service.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
_BLOCKED_NAMES = ("localhost", ".localhost", ".local", ".internal", ".home.arpa")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Iterable[str]]
"""host, port -> the addresses the host resolves to (as text)."""


class UnsafeUrl(ValueError):
    """The URL is not an https URL to a public address; the message says why."""


class HostDoesNotResolve(UnsafeUrl):
    """The host has no address right now (which may pass: a caller may try again later)."""


def system_resolver(host: str, port: int) -> list[str]:
    """What the operating system resolves `host` to (TCP)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def _kind(address: Address) -> str | None:
    """Why `address` is not a global unicast address, or None when it is."""
    # Python's is_global alone lets multicast (ff0e::/16) and site-local (fec0::/10) through, so each
    # special range is named; the order only decides which word the message uses.
    checks = [("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
              ("reserved", address.is_reserved), ("private", address.is_private),
              ("not globally routable", not address.is_global)]
    return next((word for word, hit in checks if hit), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address], bool]:
    """(form, embedded IPv4 addresses, whether the IPv4 address is the real destination).

    For mapped, compatible and NAT64 addresses the packet goes to the IPv4 host, so that host alone is
    judged; 6to4 and Teredo addresses are IPv6 destinations that a relay may deliver to the IPv4 host,
    so both must be public."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", [address.ipv4_mapped], True
    if address in _NAT64:
        return "NAT64", [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)], True
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are not IPv4-compatible addresses
        return "IPv4-compatible", [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)], True
    if address.sixtofour is not None:
        return "6to4", [address.sixtofour], False
    if address.teredo is not None:
        server, client = address.teredo
        return "Teredo", [server, client], False
    return "", [], False


def refusal(address: Address, *, allow_loopback: bool = False) -> str | None:
    """Why `address` may not be called, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        form, embedded, translated = _embedded_ipv4(address)
        for inner in embedded:
            # Loopback is allowed only as a real destination, never wrapped in a tunnel address.
            reason = refusal(inner, allow_loopback=allow_loopback and translated)
            if reason:
                return f"{address} is a {form} address of {reason}"
        if translated:
            return None
    kind = _kind(address)
    if kind is None or (kind == "loopback" and allow_loopback):
        return None
    return f"{address} ({kind})"


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host written in a shorthand IPv4 form means (127.1, 0x7f.0.0.1, 017700000001),
    or None for a name. URL parsers (WHATWG URL, IPv4 parser) and the C library's inet_aton read these as
    addresses, so they are judged as the address they are; a name whose last label is numeric is never a
    DNS name."""
    last = host.rsplit(".", 1)[-1]
    if ":" in host or not last or not (last.isdigit() or last.startswith("0x")):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        raise UnsafeUrl("is not a valid host name or IPv4 address") from None


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
    legacy = _legacy_ipv4(host)
    try:
        address = legacy or ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(_BLOCKED_NAMES) or "." not in host:
            if not (allow_loopback and host == "localhost"):
                raise UnsafeUrl("must point at a public host") from None
        return host
    reason = refusal(address, allow_loopback=allow_loopback)
    if reason:
        raise UnsafeUrl(f"must point at a public address: {reason}")
    return host


@dataclass(frozen=True)
class Target:
    """Where to connect for a checked URL: `address` is vetted, `host` is what TLS and Host name."""

    host: str
    port: int
    address: str


def resolve_public(url: str, *, allow_loopback: bool = False, resolver: Resolver = system_resolver) -> Target:
    """Check `url`, resolve its host once and vet every address; the address to connect to.

    Every answer must pass, not just the one used: a name answering one public and one internal
    address is refused rather than trusted to pick the right one."""
    host = check_url(url, allow_loopback=allow_loopback)
    port = urlsplit(url).port or 443
    try:
        answers = list(resolver(host, port))
    except (OSError, UnicodeError):
        raise HostDoesNotResolve("host does not resolve") from None
    if not answers:
        raise HostDoesNotResolve("host does not resolve")
    addresses: list[Address] = []
    for answer in answers:
        try:
            # A scope id (fe80::1%eth0) only ever comes with link-local addresses, refused below anyway.
            address = ipaddress.ip_address(str(answer).split("%", 1)[0])
        except ValueError:
            raise UnsafeUrl("host resolves to something that is not an IP address") from None
        reason = refusal(address, allow_loopback=allow_loopback)
        if reason:
            raise UnsafeUrl(f"host resolves to a non-public address: {reason}")
        addresses.append(address)
    return Target(host, port, str(addresses[0]))
