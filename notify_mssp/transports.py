"""How the notification run's e-mails leave (#5), chosen by MAIL_TRANSPORT: SMTP (optional STARTTLS and
login; MailDev locally) or Microsoft Graph `sendMail` from the MSSP's own mailbox.

Graph's token comes from a credential of the MSSP's OWN tenant, never from the multi-tenant app customers
consent to (design.md invariant 8): the function app's managed identity in Azure, or a single-tenant app
with a client secret for local use (MAIL_CREDENTIAL).

Every send ends in a `SendOutcome`, classified here once: `sent`; `permanent` when sending this message
again cannot succeed (a recipient the server rejects: Graph 400 ErrorInvalidRecipients, SMTP 5xx on
RCPT; a message the server refuses as malformed); `transient` otherwise (connection refused or dropped,
timeouts, 4xx replies, throttling, 5xx from Graph, and configuration problems such as a failed login or a
missing Mail.Send, which a fix makes succeed later). Graph 429 and 5xx are retried inside one send,
honouring Retry-After, within MAIL_RETRY_BUDGET_SECONDS; past that the outcome carries the wait.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import ssl
import threading
import time
from dataclasses import asdict, dataclass
from email.headerregistry import Address
from email.message import EmailMessage as MimeMessage
from email.utils import formataddr, formatdate
from typing import Any, Literal, Protocol
from urllib.parse import quote

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError

from notify_mssp.email import EmailMessage
from shared.errors import retry_after_seconds
from shared.settings import Settings, SettingsError, get_settings
from shared.tables import managed_identity_credential

logger = logging.getLogger(__name__)

Status = Literal["sent", "transient", "permanent"]
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Wait before a Graph retry when the answer names none (doubles per attempt).
_FIRST_WAIT_SECONDS = 1.0
# Graph allows 4 concurrent requests per mailbox (Outlook service limits); more only earn 429s. This bounds
# one process; the send rate cap bounds the whole app.
_MAILBOX_CONCURRENCY = 4


@dataclass(frozen=True)
class SendOutcome:
    """What became of one send; `retry_after` (seconds) when the server asked for a wait."""

    status: Status
    detail: str = ""
    retry_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> SendOutcome:
        return cls(**value)


class Transport(Protocol):
    def send(self, message: EmailMessage) -> SendOutcome: ...


# --- SMTP ----------------------------------------------------------------------------------------------------


def mime_message(message: EmailMessage) -> MimeMessage:
    """multipart/alternative: the plain-text part first, the HTML part preferred by clients that can."""
    mime = MimeMessage()
    mime["From"] = formataddr((message.sender_name, message.sender)) if message.sender_name else message.sender
    mime["To"] = ", ".join(str(Address(addr_spec=a)) for a in message.to)
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(usegmt=True)
    mime["Message-ID"] = message.message_id
    for name, value in message.headers.items():
        mime[name] = value
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime


def _smtp_reply(code: int, text: object) -> str:
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {' '.join(raw.split())[:200]}"


def _by_code(code: int, what: str, reply: str) -> SendOutcome:
    # 5xx is a permanent negative reply (RFC 5321 §4.2.1); 4xx and anything odd may succeed later.
    status: Status = "permanent" if 500 <= code < 600 else "transient"
    return SendOutcome(status, f"SMTP {what}: {reply}")


class SmtpTransport:
    """SMTP with one connection per worker thread, kept open across sends and reopened when dropped."""

    def __init__(self, host: str, port: int, *, starttls: bool, username: str, password: str,
                 timeout: float) -> None:
        if username and not starttls and host not in _LOOPBACK:
            raise SettingsError("SMTP_USERNAME is set but SMTP_STARTTLS is not: the password would cross the "
                                "network in clear text")
        self._host, self._port, self._starttls = host, port, starttls
        self._username, self._password, self._timeout = username, password, timeout
        self._local = threading.local()

    def _open(self) -> smtplib.SMTP:
        connection = smtplib.SMTP(self._host, self._port, timeout=self._timeout)
        try:
            connection.ehlo()
            if self._starttls:
                connection.starttls(context=ssl.create_default_context())
                connection.ehlo()
            if self._username:
                connection.login(self._username, self._password)
        except BaseException:
            _close(connection)
            raise
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            _close(connection)

    def send(self, message: EmailMessage) -> SendOutcome:
        mime = mime_message(message)
        for attempt in (1, 2):
            reused = getattr(self._local, "connection", None) is not None
            try:
                if not reused:
                    self._local.connection = self._open()
                refused = self._local.connection.send_message(mime, from_addr=message.sender, to_addrs=message.to)
            except smtplib.SMTPServerDisconnected:
                self._drop()
                if reused and attempt == 1:
                    continue  # the kept connection had been closed by the server: open a fresh one
                return SendOutcome("transient", "SMTP server closed the connection")
            except smtplib.SMTPRecipientsRefused as exc:
                self._reset()
                codes = [code for code, _ in exc.recipients.values()]
                first = next(iter(exc.recipients.values()))
                status: Status = "permanent" if codes and all(500 <= c < 600 for c in codes) else "transient"
                return SendOutcome(status, f"SMTP recipient refused: {_smtp_reply(*first)}")
            except smtplib.SMTPSenderRefused as exc:
                self._reset()
                return _by_code(exc.smtp_code, "sender refused", _smtp_reply(exc.smtp_code, exc.smtp_error))
            except smtplib.SMTPAuthenticationError as exc:
                self._drop()
                logger.error("SMTP login failed (%s): check SMTP_USERNAME and SMTP_PASSWORD", exc.smtp_code)
                return SendOutcome("transient", f"SMTP login failed ({exc.smtp_code})")
            except smtplib.SMTPNotSupportedError:
                self._drop()
                return SendOutcome("transient", "SMTP server does not offer STARTTLS or AUTH as configured")
            except smtplib.SMTPResponseException as exc:  # data refused, HELO refused, ...
                self._reset()
                return _by_code(exc.smtp_code, "refused the message", _smtp_reply(exc.smtp_code, exc.smtp_error))
            except (OSError, smtplib.SMTPException) as exc:  # refused, unreachable, timeout, TLS failure
                self._drop()
                return SendOutcome("transient", f"SMTP server unreachable ({type(exc).__name__})")
            if refused:
                logger.warning("SMTP accepted message %s for some recipients only: %s", message.message_id,
                               ", ".join(sorted(refused)))
            return SendOutcome("sent", f"SMTP {self._host}:{self._port}")
        return SendOutcome("transient", "SMTP server closed the connection")  # pragma: no cover - loop exits above

    def _reset(self) -> None:
        """After a refused transaction the connection stays usable once reset; drop it if that fails."""
        connection = getattr(self._local, "connection", None)
        try:
            if connection is not None:
                connection.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()


def _close(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (OSError, smtplib.SMTPException):
        connection.close()


# --- Microsoft Graph sendMail ----------------------------------------------------------------------------------


def mail_credential(settings: Settings) -> TokenCredential:
    """The MSSP's own credential holding Mail.Send (MAIL_CREDENTIAL), built at first use."""
    from azure.identity import ClientSecretCredential

    if settings.get("MAIL_CREDENTIAL") == "managed_identity":
        return managed_identity_credential(settings)
    return ClientSecretCredential(
        str(settings.require("MAIL_APP_TENANT_ID")), str(settings.require("MAIL_APP_CLIENT_ID")),
        str(settings.require("MAIL_APP_CLIENT_SECRET")),
        authority=settings.get("ENTRA_AUTHORITY_HOST"),
        disable_instance_discovery=settings.get("ENTRA_DISABLE_INSTANCE_DISCOVERY"),
        # The send loop below owns retries and their budget.
        retry_total=0,
    )


def graph_body(message: EmailMessage) -> dict[str, Any]:
    """The sendMail request body. Graph's JSON form carries one body, so the HTML part is sent; Graph accepts
    only `x-` custom headers, so RFC 3834's Auto-Submitted stays SMTP-only."""
    headers = [{"name": name, "value": value} for name, value in message.headers.items()
               if name.lower().startswith("x-")]
    body: dict[str, Any] = {
        "subject": message.subject,
        "body": {"contentType": "HTML", "content": message.html},
        "toRecipients": [{"emailAddress": {"address": address}} for address in message.to],
        "internetMessageId": message.message_id,
    }
    if headers:
        body["internetMessageHeaders"] = headers
    return {"message": body, "saveToSentItems": False}


def _graph_error(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", ""
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or ""), " ".join(str(error.get("message") or "").split())[:200]


class GraphTransport:
    """`POST {graph}/v1.0/users/{sender}/sendMail` with the MSSP's own token."""

    def __init__(self, settings: Settings, *, credential: TokenCredential | None = None,
                 sleep: Any = time.sleep) -> None:
        self._settings = settings
        sender = str(settings.require("MAIL_SENDER"))
        self._url = f"{settings.get('GRAPH_API_HOST')}/v1.0/users/{quote(sender, safe='@')}/sendMail"
        self._scope = f"{settings.get('GRAPH_API_RESOURCE')}/.default"
        self._timeout = float(settings.get("HTTP_TIMEOUT_SECONDS"))
        self._budget = float(settings.get("MAIL_RETRY_BUDGET_SECONDS"))
        self._credential = credential
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._sleep = sleep
        self._in_flight = threading.BoundedSemaphore(_MAILBOX_CONCURRENCY)

    def _token(self) -> str:
        with self._lock:
            if self._credential is None:
                self._credential = mail_credential(self._settings)
            credential = self._credential
        return credential.get_token(self._scope).token

    def send(self, message: EmailMessage) -> SendOutcome:
        deadline = time.monotonic() + self._budget
        wait = _FIRST_WAIT_SECONDS
        body = graph_body(message)
        while True:
            try:
                token = self._token()
            except (AzureError, ValueError) as exc:
                # azure-identity's text can quote the token response: only the type is logged.
                logger.error("mail credential failed to get a Graph token (%s); check MAIL_CREDENTIAL",
                             type(exc).__name__)
                return SendOutcome("transient", f"mail credential failed ({type(exc).__name__})")
            try:
                with self._in_flight:
                    response = self._session.post(self._url, json=body, timeout=self._timeout,
                                                  headers={"Authorization": f"Bearer {token}"})
            except requests.RequestException as exc:
                # A timeout may hide a message Graph did send; the delivery log counts that case.
                return SendOutcome("transient", f"Graph sendMail unreachable ({type(exc).__name__})")
            if response.status_code in (200, 202):
                return SendOutcome("sent", "Graph sendMail accepted")
            code, text = _graph_error(response)
            reply = f"Graph sendMail answered {response.status_code}{' ' + code if code else ''}: {text}"
            if response.status_code == 429 or response.status_code >= 500:
                asked = retry_after_seconds(response.headers.get("Retry-After"))
                pause = asked if asked is not None else wait
                if time.monotonic() + pause > deadline:
                    return SendOutcome("transient", reply, retry_after=pause)
                logger.info("Graph sendMail answered %s; retrying in %.1f s", response.status_code, pause)
                self._sleep(pause)
                wait *= 2
                continue
            return self._classify(response.status_code, code, reply)

    @staticmethod
    def _classify(status: int, code: str, reply: str) -> SendOutcome:
        if status == 400:
            # ErrorInvalidRecipients and every other 400: this exact message can never be accepted.
            return SendOutcome("permanent", reply)
        if status in (401, 403, 404):
            # Token, Mail.Send or sender mailbox: configuration the MSSP can fix, after which it succeeds.
            logger.error("%s (check MAIL_SENDER and the mail credential's Mail.Send)", reply)
            return SendOutcome("transient", reply)
        return SendOutcome("permanent" if 400 <= status < 500 else "transient", reply)


# --- choice by settings ------------------------------------------------------------------------------------------


def build_transport(settings: Settings) -> Transport:
    if settings.get("MAIL_TRANSPORT") == "graph":
        return GraphTransport(settings)
    return SmtpTransport(
        str(settings.require("SMTP_HOST")), int(settings.get("SMTP_PORT")),
        starttls=bool(settings.get("SMTP_STARTTLS")), username=str(settings.get("SMTP_USERNAME")),
        password=str(settings.get("SMTP_PASSWORD")), timeout=float(settings.get("HTTP_TIMEOUT_SECONDS")))


@functools.cache
def _process_transport() -> Transport:
    return build_transport(get_settings())


def get_transport(settings: Settings | None = None) -> Transport:
    """The transport MAIL_TRANSPORT chooses: shared by the process, or a new one for explicit settings."""
    return _process_transport() if settings is None else build_transport(settings)
