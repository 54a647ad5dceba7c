"""Which addresses an outbound call (a callbackUrl) may reach: global unicast only, with the IPv4 address
inside mapped, compatible, NAT64, 6to4 and Teredo IPv6 addresses vetted too. Pure unit tests."""

from __future__ import annotations

import ipaddress

import pytest

from shared.outbound_url import HostDoesNotResolve, UnsafeUrl, check_url, refusal, resolve_public

# Each refused address with a word the refusal must carry, so the message says why.
REFUSED = [
    ("fec0::1", "site-local"),
    ("2002:a9fe:a9fe::1", "6to4 address of 169.254.169.254 (link-local)"),  # 6to4 around the metadata service
    ("2002:7f00:1::1", "6to4 address of 127.0.0.1 (loopback)"),
    ("2002:0a00:0001::1", "6to4 address of 10.0.0.1 (private)"),
    ("::ffff:10.0.0.1", "IPv4-mapped address of 10.0.0.1 (private)"),
    ("::ffff:169.254.169.254", "IPv4-mapped address of 169.254.169.254 (link-local)"),
    ("::10.0.0.1", "IPv4-compatible address of 10.0.0.1 (private)"),
    ("64:ff9b::a9fe:a9fe", "NAT64 address of 169.254.169.254 (link-local)"),
    ("64:ff9b::7f00:1", "NAT64 address of 127.0.0.1 (loopback)"),
    ("64:ff9b::c0a8:101", "NAT64 address of 192.168.1.1 (private)"),
    ("64:ff9b:1::a00:1", "reserved"),  # RFC 8215 local-use prefix: never unwrapped, never allowed
    # Teredo: server 65.54.227.120, client 10.0.0.1 obfuscated (RFC 4380 §4: client bits inverted).
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo address of 10.0.0.1 (private)"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "(private)"),  # a public client, but Teredo itself is not global
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),  # global-scope multicast, which Python calls is_global
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("2001:db8::1", "private"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 - an address to refuse, not to bind
    ("127.0.0.1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.0.1", "private"),
    ("169.254.169.254", "link-local"),
    ("100.64.0.1", "not globally routable"),  # shared address space (CGNAT), RFC 6598
    ("100.127.255.254", "not globally routable"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "private"),
    ("198.18.0.1", "private"),
]

ALLOWED = ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2606:4700:4700::1111", "::ffff:8.8.8.8",
           "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address, reason", REFUSED)
def test_a_non_global_address_is_refused_saying_why(address, reason):
    found = refusal(ipaddress.ip_address(address))
    assert found is not None and reason in found
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(UnsafeUrl, match="must point at a public address"):
        check_url(f"https://{host}/cb")


@pytest.mark.parametrize("address", ALLOWED)
def test_a_global_unicast_address_is_allowed(address):
    assert refusal(ipaddress.ip_address(address)) is None
    host = f"[{address}]" if ":" in address else address
    assert check_url(f"https://{host}/cb")


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_the_local_development_setting_allows_loopback(address):
    assert refusal(ipaddress.ip_address(address), allow_loopback=True) is None


@pytest.mark.parametrize("address", ["10.0.0.1", "169.254.169.254", "fe80::1", "fc00::1", "::",
                                     "2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:80ff:fffe"])
def test_the_local_development_setting_allows_loopback_only(address):
    # A loopback address inside a 6to4 or Teredo address is a tunnel destination, not loopback.
    assert refusal(ipaddress.ip_address(address), allow_loopback=True) is not None


@pytest.mark.parametrize("host, meant", [("127.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
                                         ("017700000001", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
                                         ("169.254.43518", "169.254.169.254"), ("10.1", "10.0.0.1")])
def test_a_shorthand_ipv4_host_is_judged_as_the_address_it_means(host, meant):
    # URL parsers and inet_aton read these as IPv4 addresses, so a resolver would connect to `meant`.
    with pytest.raises(UnsafeUrl, match=f"must point at a public address: {meant} "):
        check_url(f"https://{host}/cb")


@pytest.mark.parametrize("host", ["1.2.3.4.5", "0x1g.0.0.1", "256.256.256.256.1"])
def test_a_host_with_a_numeric_last_label_that_is_no_address_is_refused(host):
    with pytest.raises(UnsafeUrl):
        check_url(f"https://{host}/cb")


def test_a_shorthand_of_a_public_address_is_allowed_as_that_address():
    assert check_url("https://8.8.2056/cb") == "8.8.2056"


def _resolver(*answers: str):
    def resolve(host: str, port: int) -> list[str]:
        return list(answers)

    return resolve


def test_a_name_is_resolved_once_and_the_vetted_address_returned():
    target = resolve_public("https://hooks.example.com:8443/cb", resolver=_resolver("8.8.8.8", "2001:4860::1"))
    assert (target.host, target.port, target.address) == ("hooks.example.com", 8443, "8.8.8.8")


@pytest.mark.parametrize("answers", [("10.0.0.8",), ("8.8.8.8", "10.0.0.8"), ("fd00::1",), ("127.0.0.1",),
                                     ("2002:a9fe:a9fe::1",), ("not an address",)])
def test_a_name_with_any_non_public_answer_is_refused(answers):
    with pytest.raises(UnsafeUrl, match="host resolves to"):
        resolve_public("https://hooks.example.com/cb", resolver=_resolver(*answers))


def test_a_name_without_answers_does_not_resolve():
    with pytest.raises(HostDoesNotResolve):
        resolve_public("https://hooks.example.com/cb", resolver=_resolver())

    def failing(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(HostDoesNotResolve):
        resolve_public("https://hooks.example.com/cb", resolver=failing)


def test_the_system_resolver_answers_for_localhost_which_only_the_local_setting_allows():
    with pytest.raises(UnsafeUrl):
        resolve_public("https://localhost/hook")
    assert ipaddress.ip_address(resolve_public("https://localhost/hook", allow_loopback=True).address).is_loopback
