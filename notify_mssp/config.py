"""Typed settings of the notification flow: frozen config objects built in notify_mssp.wiring (or by the
classes that take them) from the settings registry (shared.settings.SETTINGS holds every name, default and
parser)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.settings import Settings, get_settings, load_config, setting


@dataclass(frozen=True)
class RunConfig:
    """What the run's orchestrators need, read by an activity because orchestrator code must not read it."""

    batch_size: int = setting("NOTIFY_BATCH_SIZE")
    max_attempts: int = setting("NOTIFY_SEND_MAX_ATTEMPTS")
    backoff_seconds: int = setting("NOTIFY_RETRY_BACKOFF_SECONDS")
    digest_max_items: int = setting("NOTIFY_DIGEST_MAX_ITEMS")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RunConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class DeliveryConfig:
    """Claims and the delivery log (notify_mssp.planner, .delivery)."""

    claim_timeout_seconds: int = setting("NOTIFY_CLAIM_TIMEOUT")
    duplicate_policy: str = setting("DUPLICATE_POLICY")
    give_up_after_runs: int = setting("NOTIFY_GIVE_UP_AFTER_RUNS")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> DeliveryConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class SendCapConfig:
    """The shared send cap (notify_mssp.ratecap); 0 switches a window off."""

    per_minute: int = setting("SEND_RATE_PER_MINUTE")
    per_day: int = setting("SEND_RATE_PER_DAY")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SendCapConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class SenderConfig:
    """Who e-mails come from and where their links point (notify_mssp.email.Sender)."""

    address: str = setting("MAIL_SENDER")
    name: str = setting("MAIL_SENDER_NAME")
    portal_host: str = setting("PORTAL_HOST")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SenderConfig:
        return load_config(cls, settings)


# --- e-mail transports (notify_mssp.transports), built once per worker in notify_mssp.wiring ---------------------


@dataclass(frozen=True)
class SmtpConfig:
    """MAIL_TRANSPORT=smtp: the server, STARTTLS and the optional login."""

    host: str = setting("SMTP_HOST", required=True)
    port: int = setting("SMTP_PORT")
    starttls: bool = setting("SMTP_STARTTLS")
    username: str = setting("SMTP_USERNAME")
    password: str = setting("SMTP_PASSWORD")
    timeout_seconds: int = setting("HTTP_TIMEOUT_SECONDS")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SmtpConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class GraphMailConfig:
    """MAIL_TRANSPORT=graph: sendMail from MAIL_SENDER's mailbox; the credential is MailCredentialConfig's."""

    sender: str = setting("MAIL_SENDER", required=True)
    api_host: str = setting("GRAPH_API_HOST")
    resource: str = setting("GRAPH_API_RESOURCE")
    timeout_seconds: int = setting("HTTP_TIMEOUT_SECONDS")
    retry_budget_seconds: int = setting("MAIL_RETRY_BUDGET_SECONDS")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> GraphMailConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class MailCredentialConfig:
    """Who holds Mail.Send in the MSSP's own tenant (MAIL_CREDENTIAL): the managed identity, or a single-tenant
    app with a secret, whose three settings are read only then (notify_mssp.transports.mail_credential)."""

    kind: str = setting("MAIL_CREDENTIAL")
    managed_identity_client_id: str = setting("AZURE_CLIENT_ID")
    authority_host: str = setting("ENTRA_AUTHORITY_HOST")
    disable_instance_discovery: bool = setting("ENTRA_DISABLE_INSTANCE_DISCOVERY")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> MailCredentialConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class MailAppSecretConfig:
    """MAIL_CREDENTIAL=secret: the single-tenant mail app and its secret."""

    tenant_id: str = setting("MAIL_APP_TENANT_ID", required=True)
    client_id: str = setting("MAIL_APP_CLIENT_ID", required=True)
    client_secret: str = setting("MAIL_APP_CLIENT_SECRET", required=True)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> MailAppSecretConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class _TransportChoice:
    kind: str = setting("MAIL_TRANSPORT")


@dataclass(frozen=True)
class MailConfig:
    """How e-mail leaves (MAIL_TRANSPORT) and the settings of that transport only: the other one's are not read,
    so they need not be set."""

    transport: str
    smtp: SmtpConfig | None = None
    graph: GraphMailConfig | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> MailConfig:
        current = settings or get_settings()
        kind = load_config(_TransportChoice, current).kind
        if kind == "graph":
            return cls(kind, graph=GraphMailConfig.from_settings(current))
        return cls(kind, smtp=SmtpConfig.from_settings(current))


# --- operational notices (notify_mssp.ops_notices and the modules it uses) ------------------------------------


@dataclass(frozen=True)
class OpsNoticeConfig:
    """Where operational notices go; empty: incidents are only recorded and logged."""

    recipients: tuple[str, ...] = setting("OPS_EMAIL")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> OpsNoticeConfig:
        return load_config(cls, settings)


@dataclass(frozen=True)
class Thresholds:
    """When an operational condition becomes an incident (notify_mssp.ops_notices, .mssp_checks)."""

    failing_runs: int = setting("OPS_FAILING_RUNS")
    silent_hours: int = setting("OPS_SILENT_HOURS")
    expiry_warning_days: int = setting("OPS_CREDENTIAL_WARNING_DAYS")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Thresholds:
        return load_config(cls, settings)


@dataclass(frozen=True)
class CredentialExpiryConfig:
    """What says when the multi-tenant app's credential expires: its form and, for a secret, the date given;
    a certificate's expiry is read from the certificate (notify_mssp.mssp_checks)."""

    kind: str = setting("MSSP_APP_CREDENTIAL")
    secret_expires_at: datetime | None = setting("MSSP_CREDENTIAL_EXPIRES_AT")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> CredentialExpiryConfig:
        return load_config(cls, settings)
