"""The transports against real servers: SMTP (MailDev, nothing listening, and a small SMTP responder that
refuses chosen recipients) and Graph sendMail on the local cloud with its faults. The send rate cap is
tested in test_ratecap.py, reconnecting after the server closed the connection in test_smtp_reconnect.py."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Self

import pytest

from local.run.services import LocalCloud, free_port
from notify_mssp.config import GraphMailConfig, MailAppSecretConfig, MailConfig, MailCredentialConfig
from notify_mssp.email import EmailMessage, Sender, render_alert_email
from notify_mssp.rules import Rule
from notify_mssp.transports import (
    CredentialFactory,
    GraphTransport,
    SmtpTransport,
    Transport,
    build_transport,
    mail_credential,
)
from shared.settings import Settings

SENDER = Sender("alerts@mssp.example", "MSSP alerts", "https://security.microsoft.com")
GRAPH = "https://graph.microsoft.com"


def recipient(domain: str = "mssp.example") -> str:
    return f"soc-{uuid.uuid4().hex[:12]}@{domain}"


def message(to: str, token: str | None = None) -> EmailMessage:
    tenant = {"RowKey": str(uuid.uuid4()), "displayName": "Contoso Ltd"}
    alert = {"PartitionKey": tenant["RowKey"], "alertId": f"da{uuid.uuid4().hex}", "title": "Suspicious sign-in",
             "severity": "medium", "createdDateTime": "2026-11-27T08:01:02.0000000Z"}
    rule = Rule.from_json({"id": uuid.uuid4().hex, "name": "SOC", "recipients": [to]})
    return render_alert_email(alert, tenant, rule, to, message_id=token or uuid.uuid4().hex, sender=SENDER)


# --- SMTP ------------------------------------------------------------------------------------------------------


class StubSmtpServer:
    """An asyncio server on a free loopback port, run on its own thread while the `with` block lasts; a
    subclass answers each connection in `_session`."""

    def __init__(self) -> None:
        self.sessions = 0
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._session, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class RefusingSmtpServer(StubSmtpServer):
    """A minimal SMTP responder: accepts mail, but answers RCPT for the addresses in `refuse` with the given
    reply (550 by default), as a real server refuses an unknown mailbox."""

    def __init__(self, refuse: dict[str, str]) -> None:
        super().__init__()
        self.refuse = {k.lower(): v for k, v in refuse.items()}
        self.accepted: list[str] = []
        self._writers: list[asyncio.StreamWriter] = []

    def drop_connections(self) -> None:
        """Close every open session, as a server does with idle connections."""
        for writer in self._writers:
            self._loop.call_soon_threadsafe(writer.close)
        time.sleep(0.2)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        self.sessions += 1
        self._writers.append(writer)
        await reply("220 refusing.example ESMTP")
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while line := (await reader.readline()).decode("ascii", "replace").strip():
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    await reply("250 refusing.example")
                elif verb == "RCPT":
                    address = line.split("<", 1)[-1].rstrip(">").lower()
                    await reply(self.refuse.get(address, "250 2.1.5 OK"))
                elif verb == "DATA":
                    await reply("354 go ahead")
                    await reader.readuntil(b"\r\n.\r\n")
                    self.accepted.append(line)
                    await reply("250 2.0.0 queued")
                elif verb == "QUIT":
                    await reply("221 bye")
                    break
                else:  # MAIL, RSET, NOOP
                    await reply("250 OK")
        writer.close()


def smtp_to(port: int) -> SmtpTransport:
    return SmtpTransport("127.0.0.1", port, starttls=False, username="", password="", timeout=5)


def test_smtp_delivers_to_maildev(maildev):
    to = recipient()
    outcome = smtp_to(maildev.smtp_port).send(message(to))
    assert outcome.status == "sent"
    assert [m["subject"] for m in maildev.messages() if m["to"][0]["address"] == to]


def test_smtp_server_down_is_transient():
    outcome = smtp_to(free_port()).send(message(recipient()))
    assert outcome.status == "transient" and "unreachable" in outcome.detail


def test_smtp_recipient_refused_with_5xx_is_permanent():
    refused = recipient()
    with RefusingSmtpServer({refused: "550 5.1.1 no such user"}) as server:
        outcome = smtp_to(server.port).send(message(refused))
    assert outcome.status == "permanent" and "550" in outcome.detail and server.accepted == []


def test_smtp_recipient_refused_with_4xx_is_transient():
    greylisted = recipient()
    with RefusingSmtpServer({greylisted: "450 4.2.0 greylisted, try later"}) as server:
        outcome = smtp_to(server.port).send(message(greylisted))
    assert outcome.status == "transient" and "450" in outcome.detail


def test_smtp_keeps_sending_on_the_same_connection_after_a_refused_recipient():
    refused, fine = recipient(), recipient()
    with RefusingSmtpServer({refused: "550 5.1.1 no such user"}) as server:
        transport = smtp_to(server.port)
        assert transport.send(message(refused)).status == "permanent"
        assert transport.send(message(fine)).status == "sent"
        assert len(server.accepted) == 1


def test_smtp_reconnects_when_the_server_dropped_the_kept_connection():
    with RefusingSmtpServer({}) as server:
        transport = smtp_to(server.port)
        assert transport.send(message(recipient())).status == "sent"
        server.drop_connections()
        assert transport.send(message(recipient())).status == "sent"
        assert len(server.accepted) == 2 and server.sessions == 2


def test_smtp_login_without_starttls_to_a_remote_server_is_refused():
    from shared.settings import SettingsError

    with pytest.raises(SettingsError, match="SMTP_STARTTLS"):
        SmtpTransport("smtp.example.net", 587, starttls=False, username="u", password="p", timeout=5)


# --- Graph sendMail --------------------------------------------------------------------------------------------


def credential_of(settings: Settings) -> CredentialFactory:
    """What notify_mssp.wiring gives the transport: the mail credential, built at the first send."""
    return lambda: mail_credential(MailCredentialConfig.from_settings(settings),
                                   lambda: MailAppSecretConfig.from_settings(settings))


def transport_of(settings: Settings) -> Transport:
    return build_transport(MailConfig.from_settings(settings), credential_of(settings))


def graph_of(settings: Settings, **options: Any) -> GraphTransport:
    return GraphTransport(GraphMailConfig.from_settings(settings), credential_of(settings), **options)


class MailTenant:
    """The MSSP's own tenant in the local cloud, with a single-tenant app holding Mail.Send."""

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.tenant_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.secret = secrets.token_urlsafe(24)
        cloud.control("POST", "tenants", json={"id": self.tenant_id, "domains": [f"m{self.tenant_id[:8]}.example"],
                                               "displayName": "The MSSP"})
        cloud.control("POST", "apps", json={
            "clientId": self.client_id, "displayName": "mailer", "homeTenant": self.tenant_id, "multiTenant": False,
            "secrets": [{"value": self.secret}], "requiredResourceAccess": {GRAPH: ["Mail.Send"]}})

    def settings(self, **extra: str) -> Settings:
        return Settings({
            "MAIL_TRANSPORT": "graph", "MAIL_SENDER": "alerts@mssp.example", "MAIL_CREDENTIAL": "secret",
            "MAIL_APP_TENANT_ID": self.tenant_id, "MAIL_APP_CLIENT_ID": self.client_id,
            "MAIL_APP_CLIENT_SECRET": self.secret, "ENTRA_AUTHORITY_HOST": self.cloud.url,
            "ENTRA_DISABLE_INSTANCE_DISCOVERY": "true", "GRAPH_API_HOST": self.cloud.url,
            "MAIL_RETRY_BUDGET_SECONDS": "10", **extra})

    def fault(self, **plan: Any) -> None:
        self.cloud.control("POST", f"tenants/{self.tenant_id}/faults", json={"api": "mail", **plan})

    def delivered_to(self, address: str) -> list[dict[str, Any]]:
        messages = self.cloud.control("GET", "mail", params={"tenant": self.tenant_id}).json()["messages"]
        return [m for m in messages if address in m["toRecipients"]]


@pytest.fixture
def mail_tenant(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[MailTenant]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cloud.ca_path))
    yield MailTenant(cloud)


def test_graph_sends_from_the_mssp_mailbox_with_the_message_id_and_x_headers(mail_tenant):
    to = recipient()
    sent = message(to, token="graph-stable-1")
    outcome = transport_of(mail_tenant.settings()).send(sent)
    assert outcome.status == "sent"
    (record,) = mail_tenant.delivered_to(to)
    assert record["sender"] == "alerts@mssp.example" and record["clientId"] == mail_tenant.client_id
    assert record["subject"] == sent.subject and record["body"]["contentType"] == "HTML"
    assert record["internetMessageId"] == "<graph-stable-1@mssp.example>"
    assert {h["name"] for h in record["internetMessageHeaders"]} >= {"X-MSSP-Rule-Id", "X-MSSP-Alert-Id"}
    assert record["saveToSentItems"] is False


def test_graph_429_is_retried_after_retry_after_and_recovers(mail_tenant):
    to = recipient()
    mail_tenant.fault(kind="throttle", count=1, retryAfter=1)
    waits: list[float] = []
    outcome = graph_of(mail_tenant.settings(), sleep=waits.append).send(message(to))
    assert outcome.status == "sent" and waits == [1.0]  # one retry, after the Retry-After it was given
    assert len(mail_tenant.delivered_to(to)) == 1


def test_graph_5xx_is_retried_and_recovers(mail_tenant):
    to = recipient()
    mail_tenant.fault(kind="unavailable", count=2, retryAfter=1)
    assert graph_of(mail_tenant.settings()).send(message(to)).status == "sent"
    assert len(mail_tenant.delivered_to(to)) == 1


def test_a_graph_500_is_not_resent_in_the_same_send_since_the_mail_may_have_gone(mail_tenant):
    # A 500 leaves unknown whether Graph sent the message; resending now could deliver it twice uncounted.
    # The send reports it as possibly submitted, and the delivery log's duplicate policy decides later.
    to = recipient()
    mail_tenant.fault(kind="server_error", count=1)
    waits: list[float] = []
    outcome = graph_of(mail_tenant.settings(), sleep=waits.append).send(message(to))
    assert outcome.status == "transient" and outcome.submitted and "500" in outcome.detail
    assert waits == []  # not retried inside the send


def test_graph_429_beyond_the_retry_budget_is_transient_with_the_wait(mail_tenant):
    to = recipient()
    mail_tenant.fault(kind="throttle", count=1, retryAfter=30)
    outcome = graph_of(mail_tenant.settings(MAIL_RETRY_BUDGET_SECONDS="2")).send(message(to))
    assert outcome.status == "transient" and outcome.retry_after == 30.0 and "429" in outcome.detail
    assert mail_tenant.delivered_to(to) == []
    assert not outcome.submitted  # throttled: Graph took nothing, the rate cap slot comes back


def test_graph_rejected_recipient_is_permanent(mail_tenant):
    refused = recipient("customer.example")
    mail_tenant.cloud.control("PUT", "mail/rejected", json={"addresses": [refused]})
    try:
        outcome = graph_of(mail_tenant.settings()).send(message(refused))
    finally:
        mail_tenant.cloud.control("PUT", "mail/rejected", json={"addresses": []})
    assert outcome.status == "permanent" and "ErrorInvalidRecipients" in outcome.detail
    assert not outcome.submitted and "submitted" not in outcome.to_json()


def test_graph_with_a_wrong_mail_credential_is_transient_and_quotes_no_secret(mail_tenant):
    settings = mail_tenant.settings(MAIL_APP_CLIENT_SECRET="wrong-secret-value")
    outcome = graph_of(settings).send(message(recipient()))
    assert outcome.status == "transient" and "mail credential" in outcome.detail
    assert "wrong-secret-value" not in outcome.detail


# --- settings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "raw", "fragment"), [
    ("MAIL_TRANSPORT", "fax", "must be one of smtp, graph"),
    ("MAIL_CREDENTIAL", "multi_tenant_app", "must be one of managed_identity, secret"),
    ("MAIL_SENDER", "not an address", "not an e-mail address"),
    ("SMTP_PORT", "70000", "not a TCP port"),
    ("SMTP_STARTTLS", "maybe", "not a boolean"),
    ("SEND_RATE_PER_MINUTE", "-1", "zero (off) or more"),
    ("OPS_EMAIL", "ops@mssp.example, nonsense", "not an e-mail address"),
    ("MSSP_CREDENTIAL_EXPIRES_AT", "next March", "ISO 8601 date"),
    ("MAIL_APP_CLIENT_ID", "mailer", "not a GUID"),
])
def test_a_bad_mail_setting_fails_naming_the_setting(name, raw, fragment):
    from shared.settings import SettingsError

    with pytest.raises(SettingsError) as error:
        Settings({name: raw}).get(name)
    assert name in str(error.value) and fragment in str(error.value)


def test_the_smtp_transport_needs_a_host():
    from shared.settings import SettingsError

    with pytest.raises(SettingsError, match="SMTP_HOST is not set"):
        transport_of(Settings({"MAIL_TRANSPORT": "smtp"}))
