"""How the notification run's e-mails leave, chosen by MAIL_TRANSPORT: SMTP (optional STARTTLS and
login; MailDev locally) or Microsoft Graph `sendMail` from the MSSP's own mailbox.

Graph's token comes from a credential of the MSSP's OWN tenant, never from the multi-tenant app customers
consent to (docs/ARCHITECTURE.md, invariant 8): the function app's managed identity in Azure, or a single-tenant app
with a client secret for local use (MAIL_CREDENTIAL).

Every send ends in a `SendOutcome`, classified here once: `sent`; `permanent` when sending this message
again cannot succeed (a recipient the server rejects: Graph 400 ErrorInvalidRecipients, SMTP 5xx on
RCPT; a message the server refuses as malformed); `transient` otherwise (connection refused or dropped,
timeouts, 4xx replies, throttling, 5xx from Graph, and configuration problems such as a failed login or a
missing Mail.Send, which a fix makes succeed later). Graph 429 and 5xx are retried inside one send,
honouring Retry-After, within MAIL_RETRY_BUDGET_SECONDS; past that the outcome carries the wait.

SMTP servers close connections on their own: an idle kept connection (MailDev, Postfix and Exchange after
a minute or so, often with `421`), or one shut down for load. RFC 5321 §3.8 and §4.2.3 make `421` at any
command the server's notice that it closes the channel, so the message was not taken. Such a send is
reconnected and sent again at once, on a fresh connection, instead of failing for a later run. The one
exception is a connection lost after the whole message went out but before the server answered: the
message may have been delivered (RFC 1047, "Duplicate messages and SMTP"), so that send ends transient
and is not repeated now.

Each outcome says whether the message may have reached the server (`submitted`); after every send the
transport settles the send rate cap's slot (notify_mssp.ratecap.settle_send), which gives back the slots
of sends that never did, since the mailbox's limit only counts messages it took. Every transient failure
is logged with its reason (the server's reply or the error's type; never the message or credentials).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from email.headerregistry import Address
from email.message import EmailMessage as MimeMessage
from email.utils import formataddr, formatdate
from typing import Any, Literal, Protocol
from urllib.parse import quote

import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError

from notify_mssp import ratecap
from notify_mssp.config import GraphMailConfig, MailAppSecretConfig, MailConfig, MailCredentialConfig, SmtpConfig
from notify_mssp.email import EmailMessage
from shared.errors import retry_after_seconds
from shared.settings import SettingsError
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
    # False only when the message surely never reached the server (nothing sent, or refused before or
    # at its end): its rate cap slot is given back. Not part of the JSON form.
    submitted: bool = True

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        del value["submitted"]
        return value

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
    # 5xx is a permanent negative reply (RFC 5321 §4.2.1); 4xx and anything odd may succeed later. Either
    # way the server answered that it did not take the message.
    status: Status = "permanent" if 500 <= code < 600 else "transient"
    return SendOutcome(status, f"SMTP {what}: {reply}", submitted=False)


class _Connection(smtplib.SMTP):
    """smtplib.SMTP that knows when the message went out unanswered: DATA was answered 354, so the content
    follows, and the final reply has not come yet. A connection lost then may have delivered the message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.unanswered_data = False
        self._in_data = False
        super().__init__(*args, **kwargs)

    def data(self, msg: Any) -> tuple[int, bytes]:
        self._in_data = True
        try:
            return super().data(msg)
        finally:
            self._in_data = False

    def getreply(self) -> tuple[int, bytes]:
        code, text = super().getreply()
        if self._in_data:
            self.unanswered_data = code == 354  # the final reply, whatever it is, answers the content
        return code, text


# The command each smtplib exception answers, to name where a server gave up.
_AT_COMMAND: list[tuple[type[Exception], str]] = [
    (smtplib.SMTPConnectError, "greeting"), (smtplib.SMTPHeloError, "EHLO"),
    (smtplib.SMTPAuthenticationError, "AUTH"), (smtplib.SMTPSenderRefused, "MAIL FROM"),
    (smtplib.SMTPDataError, "DATA")]
# Connection errors that mean the server (or something between) closed a connection that was open.
_CLOSED = (smtplib.SMTPServerDisconnected, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


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

    @classmethod
    def from_config(cls, config: SmtpConfig) -> SmtpTransport:
        return cls(config.host, config.port, starttls=config.starttls, username=config.username,
                   password=config.password, timeout=float(config.timeout_seconds))

    def _open(self) -> _Connection:
        connection = _Connection(self._host, self._port, timeout=self._timeout)
        try:
            _ehlo(connection)
            if self._starttls:
                connection.starttls(context=ssl.create_default_context())
                _ehlo(connection)
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
        outcome = self._send(message)
        if outcome.status == "transient":
            logger.warning("SMTP send of %s to %s:%d failed, to be tried again later: %s", message.message_id,
                           self._host, self._port, outcome.detail)
        ratecap.settle_send(submitted=outcome.submitted)
        return outcome

    def _send(self, message: EmailMessage) -> SendOutcome:
        mime = mime_message(message)
        first = ""
        for attempt in (1, 2):
            connection: _Connection | None = getattr(self._local, "connection", None)
            try:
                if connection is None:
                    connection = self._local.connection = self._open()
                refused = connection.send_message(mime, from_addr=message.sender, to_addrs=message.to)
            except (OSError, smtplib.SMTPException) as exc:
                outcome, again = self._failure(exc, connection)
                if again and attempt == 1:
                    # The server closed the channel before taking the message: a fresh connection usually
                    # works at once (an idle timeout, a restart), and the rate cap slot is still this send's.
                    first = outcome.detail
                    logger.warning("%s; reconnecting to send %s again at once", first, message.message_id)
                    continue
                if first:
                    outcome = replace(outcome, detail=f"{outcome.detail} (after reconnecting: {first})")
                return outcome
            if refused:
                logger.warning("SMTP accepted message %s for some recipients only: %s", message.message_id,
                               ", ".join(sorted(refused)))
            return SendOutcome("sent", f"SMTP {self._host}:{self._port}" + (f" after reconnecting: {first}"
                                                                            if first else ""))
        raise AssertionError("unreachable: the second attempt returns")  # pragma: no cover

    def _failure(self, exc: OSError | smtplib.SMTPException, connection: _Connection | None
                 ) -> tuple[SendOutcome, bool]:
        """The outcome of a failed send and whether to reconnect and send again at once."""
        if connection is not None and connection.unanswered_data and isinstance(exc, OSError):
            # Only a lost connection or a timeout can end the exchange while the content is unanswered (any
            # reply clears the mark): the message went out, whether the server took it is unknown.
            self._drop()
            return SendOutcome("transient", f"SMTP connection lost after the message was sent, before the server "
                                            f"answered ({type(exc).__name__}); it may have been delivered"), False
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            replies = list(exc.recipients.values())
            if any(code == 421 for code, _ in replies):
                self._drop()
                code, text = next(r for r in replies if r[0] == 421)
                return SendOutcome("transient", f"SMTP server closing the connection at RCPT TO: "
                                                f"{_smtp_reply(code, text)}", submitted=False), True
            self._reset()
            status: Status = "permanent" if replies and all(500 <= c < 600 for c, _ in replies) else "transient"
            return SendOutcome(status, f"SMTP recipient refused: {_smtp_reply(*replies[0])}", submitted=False), False
        if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code == 421:
            self._drop()
            command = next((name for kind, name in _AT_COMMAND if isinstance(exc, kind)), "a command")
            return SendOutcome("transient", f"SMTP server closing the connection at {command}: "
                                            f"{_smtp_reply(exc.smtp_code, exc.smtp_error)}", submitted=False), True
        if isinstance(exc, _CLOSED):
            self._drop()
            return SendOutcome("transient", f"SMTP server closed the connection ({type(exc).__name__})",
                               submitted=False), True
        if isinstance(exc, smtplib.SMTPSenderRefused):
            self._reset()
            return _by_code(exc.smtp_code, "sender refused", _smtp_reply(exc.smtp_code, exc.smtp_error)), False
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            self._drop()
            logger.error("SMTP login failed (%s): check SMTP_USERNAME and SMTP_PASSWORD", exc.smtp_code)
            return SendOutcome("transient", f"SMTP login failed ({exc.smtp_code})", submitted=False), False
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            self._drop()
            return SendOutcome("transient", "SMTP server does not offer STARTTLS or AUTH as configured",
                               submitted=False), False
        if isinstance(exc, smtplib.SMTPResponseException):  # data refused, HELO refused, ...
            self._reset()
            return _by_code(exc.smtp_code, "refused the message", _smtp_reply(exc.smtp_code, exc.smtp_error)), False
        # Refused, unreachable, a timeout or a TLS failure before the message went out.
        self._drop()
        return SendOutcome("transient", f"SMTP server unreachable ({type(exc).__name__})", submitted=False), False

    def _reset(self) -> None:
        """After a refused transaction the connection stays usable once reset; drop it if that fails."""
        connection = getattr(self._local, "connection", None)
        try:
            if connection is not None:
                connection.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()


def _ehlo(connection: smtplib.SMTP) -> None:
    # smtplib's ehlo() returns a refusal instead of raising it; a 421 there must not pass for a fallback to
    # HELO, it closes the connection.
    code, reply = connection.ehlo()
    if code == 421:
        raise smtplib.SMTPHeloError(code, reply)


def _close(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (OSError, smtplib.SMTPException):
        connection.close()


# --- Microsoft Graph sendMail ----------------------------------------------------------------------------------


CredentialFactory = Callable[[], TokenCredential]


def mail_credential(config: MailCredentialConfig, app: Callable[[], MailAppSecretConfig]) -> TokenCredential:
    """The MSSP's own credential holding Mail.Send (MAIL_CREDENTIAL), built at first use; `app` reads the
    single-tenant app's settings, only for MAIL_CREDENTIAL=secret."""
    from azure.identity import ClientSecretCredential

    if config.kind == "managed_identity":
        return managed_identity_credential(config.managed_identity_client_id)
    secret = app()
    return ClientSecretCredential(
        secret.tenant_id, secret.client_id, secret.client_secret,
        authority=config.authority_host,
        disable_instance_discovery=config.disable_instance_discovery,
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

    def __init__(self, config: GraphMailConfig, credential: CredentialFactory, *, sleep: Any = time.sleep) -> None:
        """`credential` builds the mail credential, at the first send (a failure there is that send's)."""
        self._new_credential = credential
        self._url = f"{config.api_host}/v1.0/users/{quote(config.sender, safe='@')}/sendMail"
        self._scope = f"{config.resource}/.default"
        self._timeout = float(config.timeout_seconds)
        self._budget = float(config.retry_budget_seconds)
        self._credential: TokenCredential | None = None
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._sleep = sleep
        self._in_flight = threading.BoundedSemaphore(_MAILBOX_CONCURRENCY)

    def _token(self) -> str:
        with self._lock:
            if self._credential is None:
                self._credential = self._new_credential()
            credential = self._credential
        return credential.get_token(self._scope).token

    def send(self, message: EmailMessage) -> SendOutcome:
        outcome = self._send(message)
        if outcome.status == "transient":
            logger.warning("Graph sendMail of %s failed, to be tried again later: %s", message.message_id,
                           outcome.detail)
        ratecap.settle_send(submitted=outcome.submitted)
        return outcome

    def _send(self, message: EmailMessage) -> SendOutcome:
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
                return SendOutcome("transient", f"mail credential failed ({type(exc).__name__})", submitted=False)
            try:
                with self._in_flight:
                    response = self._session.post(self._url, json=body, timeout=self._timeout,
                                                  headers={"Authorization": f"Bearer {token}"})
            except requests.RequestException as exc:
                # A timeout may hide a message Graph did send; the delivery log counts that case. Only a
                # connection never made surely sent nothing.
                return SendOutcome("transient", f"Graph sendMail unreachable ({type(exc).__name__})",
                                   submitted=not isinstance(exc, requests.ConnectTimeout))
            if response.status_code in (200, 202):
                return SendOutcome("sent", "Graph sendMail accepted")
            code, text = _graph_error(response)
            reply = f"Graph sendMail answered {response.status_code}{' ' + code if code else ''}: {text}"
            if response.status_code in (429, 503):
                # Refused before processing (throttled, unavailable: RFC 9110 §15.6.4): sending again repeats
                # nothing. Other 5xx answers leave unknown whether the mail went; they are not resent here.
                asked = retry_after_seconds(response.headers.get("Retry-After"))
                pause = asked if asked is not None else wait
                if time.monotonic() + pause > deadline:
                    return SendOutcome("transient", reply, retry_after=pause, submitted=False)
                logger.info("Graph sendMail answered %s; retrying in %.1f s", response.status_code, pause)
                self._sleep(pause)
                wait *= 2
                continue
            return self._classify(response.status_code, code, reply)

    @staticmethod
    def _classify(status: int, code: str, reply: str) -> SendOutcome:
        # A 4xx refused the request: nothing was sent.
        if status == 400:
            # ErrorInvalidRecipients and every other 400: this exact message can never be accepted.
            return SendOutcome("permanent", reply, submitted=False)
        if status in (401, 403, 404):
            # Token, Mail.Send or sender mailbox: configuration the MSSP can fix, after which it succeeds.
            logger.error("%s (check MAIL_SENDER and the mail credential's Mail.Send)", reply)
            return SendOutcome("transient", reply, submitted=False)
        if 400 <= status < 500:
            return SendOutcome("permanent", reply, submitted=False)
        return SendOutcome("transient", reply)


# --- choice by configuration -------------------------------------------------------------------------------------


def build_transport(config: MailConfig, credential: CredentialFactory) -> Transport:
    """The transport MAIL_TRANSPORT chooses; `credential` builds Graph's mail credential at its first send.
    notify_mssp.wiring keeps one per worker."""
    if config.graph is not None:
        return GraphTransport(config.graph, credential)
    if config.smtp is None:
        raise SettingsError(f"MAIL_TRANSPORT: {config.transport!r} has no transport settings")
    return SmtpTransport.from_config(config.smtp)
