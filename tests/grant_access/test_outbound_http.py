"""The pinned outbound call behind result callbacks (shared.outbound_http through
notify_callback.post_result): it connects to the address vetted at check time however the name resolves
later (DNS rebinding), verifies TLS against the name, follows no redirect and uses no proxy.

Real https receivers on 127.0.0.1 (allowed by the local-development setting) with a certificate from a
CA made here for names under `.rebind.test`, which no system resolver answers: a call reaching a receiver
through such a name went to the address the test's resolver gave at check time, and nowhere else. The
invitations live in Azurite."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from grant_access import notify_callback
from grant_access.invitations import InvitationRequest, InvitationStore
from shared import outbound_http
from shared.outbound_url import UnsafeUrl
from shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

NAME = "hooks.rebind.test"
SECRET = "result-secret"


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA (its PEM is the trust bundle) and a server certificate for NAME and 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outbound test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME), x509.IPAddress(
                  ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(server.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An https receiver on 127.0.0.1: records each POST and the SNI names of its handshakes; answers a
    302 on /redirect (to `redirect_to`) and 200 elsewhere."""

    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    redirect_to: str = ""

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


def _start(certs: tuple[Path, Path, Path]) -> Receiver:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs[1], certs[2])
    receiver = Receiver(ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler))

    def on_sni(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        receiver.sni.append(name)

    context.sni_callback = on_sni

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.seen.append(Seen(self.path, dict(self.headers), body))
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", receiver.redirect_to)
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver.server.RequestHandlerClass = Handler
    receiver.server.socket = context.wrap_socket(receiver.server.socket, server_side=True)
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    return receiver


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return _certificates(tmp_path_factory.mktemp("outbound-tls"))


@pytest.fixture
def receivers(certs: tuple[Path, Path, Path]) -> Iterator[tuple[Receiver, Receiver]]:
    first, second = _start(certs), _start(certs)
    yield first, second
    for receiver in (first, second):
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture(scope="module")
def invitations(azurite) -> InvitationStore:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    return InvitationStore(service.create_table_if_not_exists(f"OutboundTest{uuid.uuid4().hex[:8]}"))


class Rebinding:
    """A resolver that answers `first` to the first lookup and `later` to every one after it."""

    def __init__(self, first: str, later: str) -> None:
        self.first, self.later = first, later
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        return [self.first if len(self.lookups) == 1 else self.later]


def _deliver(invitations: InvitationStore, url: str, resolver, ca: Path, *, allow_loopback: bool = True):
    request = InvitationRequest(customer_name="Contoso", alert_source="graph", callback_url=url)
    invitation, _ = invitations.create(request, datetime.now(UTC), 3600)
    payload: notify_callback.ResultInput = {"invitationId": invitation.id, "status": "active",
                                            "occurredAt": "2030-01-01T00:00:00+00:00"}
    return notify_callback.post_result(payload, invitations=invitations, secret=SECRET, allow_loopback=allow_loopback,
                                       timeout=10, resolver=resolver, verify=str(ca))


def test_the_call_goes_to_the_address_vetted_at_check_time(receivers, certs, invitations):
    receiver, _ = receivers
    resolver = Rebinding("127.0.0.1", "10.0.0.7")  # a second lookup would get an internal address

    outcome = _deliver(invitations, f"https://{NAME}:{receiver.port}/cb", resolver, certs[0])

    assert outcome == {"delivered": True, "retry": False, "detail": "HTTP 200"}
    assert resolver.lookups == [NAME]  # resolved once, and the one connection went to that answer
    [seen] = receiver.seen
    assert seen.headers["Host"] == f"{NAME}:{receiver.port}"
    assert receiver.sni == [NAME]  # TLS named the host, not the address
    body = json.loads(seen.body)
    assert body["status"] == "active"
    signed_at = verify(SECRET, seen.body, seen.headers[TIMESTAMP_HEADER], seen.headers[SIGNATURE_HEADER],
                       time.time())
    assert abs(signed_at - time.time()) < 60


def test_each_attempt_vets_the_name_again(receivers, certs, invitations):
    receiver, _ = receivers
    url = f"https://{NAME}:{receiver.port}/cb"
    resolver = Rebinding("127.0.0.1", "169.254.169.254")
    assert _deliver(invitations, url, resolver, certs[0])["delivered"]

    outcome = _deliver(invitations, url, resolver, certs[0])

    assert outcome["delivered"] is False and outcome["retry"] is False
    assert "169.254.169.254 (link-local)" in outcome["detail"]
    assert len(receiver.seen) == 1


def test_tls_is_verified_against_the_name_not_the_address(receivers, certs, invitations):
    receiver, _ = receivers
    other = "other.rebind.test"  # resolves to the receiver, whose certificate does not name it

    outcome = _deliver(invitations, f"https://{other}:{receiver.port}/cb", Rebinding("127.0.0.1", "127.0.0.1"),
                       certs[0])

    assert outcome == {"delivered": False, "retry": True, "detail": "SSLError"}
    assert receiver.seen == [] and receiver.sni == [other]


def test_a_redirect_from_the_receiver_is_not_followed(receivers, certs, invitations):
    receiver, elsewhere = receivers
    receiver.redirect_to = f"https://127.0.0.1:{elsewhere.port}/stolen"

    outcome = _deliver(invitations, f"https://{NAME}:{receiver.port}/redirect", Rebinding("127.0.0.1", "127.0.0.1"),
                       certs[0])

    assert outcome == {"delivered": False, "retry": False, "detail": "HTTP 302"}
    assert [s.path for s in receiver.seen] == ["/redirect"]
    assert elsewhere.seen == [] and elsewhere.sni == []  # post_result returned: no request is pending


@pytest.mark.parametrize("answers", [["10.0.0.8"], ["127.0.0.1", "10.0.0.8"], ["fd00::8"], ["::ffff:192.168.1.1"],
                                     ["2002:a9fe:a9fe::1"], ["64:ff9b::a9fe:a9fe"]])
def test_a_name_resolving_to_a_private_address_is_refused_without_a_connection(receivers, certs, invitations,
                                                                                answers):
    receiver, _ = receivers

    outcome = _deliver(invitations, f"https://{NAME}:{receiver.port}/cb", lambda host, port: answers, certs[0])

    assert outcome["delivered"] is False and outcome["retry"] is False
    assert outcome["detail"].startswith("callbackUrl refused: host resolves to a non-public address")
    assert receiver.seen == [] and receiver.sni == []


def test_loopback_is_refused_without_the_local_development_setting(receivers, certs, invitations):
    receiver, _ = receivers
    outcome = _deliver(invitations, f"https://{NAME}:{receiver.port}/cb", Rebinding("127.0.0.1", "127.0.0.1"),
                       certs[0], allow_loopback=False)
    assert outcome["delivered"] is False and "127.0.0.1 (loopback)" in outcome["detail"]
    assert receiver.seen == []


def test_a_name_that_does_not_resolve_is_tried_again_later(certs, invitations):
    def nothing(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    outcome = _deliver(invitations, f"https://{NAME}/cb", nothing, certs[0])
    assert outcome == {"delivered": False, "retry": True, "detail": "host does not resolve"}


def test_no_proxy_is_used(receivers, certs, monkeypatch):
    # A proxy would resolve the name itself, undoing the pin; this one does not exist.
    receiver, _ = receivers
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")

    response = outbound_http.post(f"https://{NAME}:{receiver.port}/direct", data=b"{}", headers={}, timeout=10,
                                  allow_loopback=True, resolver=Rebinding("127.0.0.1", "127.0.0.1"),
                                  verify=str(certs[0]))

    assert response.status_code == 200 and [s.path for s in receiver.seen] == ["/direct"]


def test_an_ip_literal_url_is_verified_against_the_address(receivers, certs):
    # How the local stack's receivers are named (https://127.0.0.1:port/...): no SNI, the IP SAN checked.
    receiver, _ = receivers
    response = outbound_http.post(f"https://127.0.0.1:{receiver.port}/literal", data=b"{}", headers={},
                                  timeout=10, allow_loopback=True, verify=str(certs[0]))
    assert response.status_code == 200
    assert receiver.seen[0].headers["Host"] == f"127.0.0.1:{receiver.port}"


def test_an_unsafe_url_is_refused_before_any_lookup():
    resolver = Rebinding("8.8.8.8", "8.8.8.8")
    with pytest.raises(UnsafeUrl):
        outbound_http.post("https://[2002:a9fe:a9fe::1]/cb", data=b"{}", headers={}, timeout=1, resolver=resolver)
    with pytest.raises(UnsafeUrl):
        outbound_http.post(f"http://{NAME}/cb", data=b"{}", headers={}, timeout=1, resolver=resolver)
    assert resolver.lookups == []
