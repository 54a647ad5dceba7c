"""Every app setting the code reads, in one place.

Settings are read from the environment (App Service app settings in Azure, `local.settings.json` or the
local host's settings file locally) at first use, validated, and cached for the life of the worker. A bad
or missing value fails with `SettingsError` naming the setting and what is wrong, at the first
invocation that needs it, never at import time (a failing import would hide every function).

`SETTINGS` is the registry: the Bicep consistency test (tests/infra), `local.settings.sample.json` and the README's
table are checked against it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

from shared.validators import is_email, is_guid

Consumer = Literal["code", "host"]
_Config = TypeVar("_Config")


class SettingsError(ValueError):
    """An app setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Setting:
    """One app setting: its name, default, how it is parsed, and who reads it."""

    name: str
    description: str
    default: str | None = None
    parse: Callable[[str, str], Any] = lambda name, raw: raw
    consumer: Consumer = "code"
    secret: bool = False


# --- parsers: (setting name, raw value) -> value, raising SettingsError with the name ---------------------

_NCRONTAB_FIELD = re.compile(r"^[\w*/,\-?]+$")


def _ncrontab(name: str, raw: str) -> str:
    fields = raw.split()
    if len(fields) != 6 or not all(_NCRONTAB_FIELD.fullmatch(f) for f in fields):
        raise SettingsError(
            f"{name}: {raw!r} is not a six-field NCRONTAB expression "
            "({second} {minute} {hour} {day} {month} {day-of-week}), e.g. '0 */5 * * * *'"
        )
    return raw


def _https_url(name: str, raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme != "https" or not parsed.netloc or parsed.query or parsed.fragment:
        raise SettingsError(f"{name}: {raw!r} must be an https URL without query or fragment")
    return raw.rstrip("/")


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes"}:
        return True
    if value in {"0", "false", "no", ""}:
        return False
    raise SettingsError(f"{name}: {raw!r} is not a boolean (true or false)")


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not an integer") from None
    if value <= 0:
        raise SettingsError(f"{name}: {raw!r} must be greater than zero")
    return value


_DURATION = re.compile(r"^(\d{1,9})([smhd])$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(name: str, raw: str) -> int:
    """A duration like 30s, 15m, 12h or 7d, in seconds."""
    match = _DURATION.fullmatch(raw.strip())
    if not match or int(match.group(1)) == 0:
        raise SettingsError(f"{name}: {raw!r} is not a positive duration such as 30s, 15m, 12h or 7d")
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def _public_base_url(name: str, raw: str) -> str:
    if not raw:
        return raw
    parsed = urlparse(raw)
    loopback = parsed.hostname in {"127.0.0.1", "localhost", "::1"}
    if (parsed.scheme != "https" and not (parsed.scheme == "http" and loopback)) or not parsed.netloc \
            or parsed.query or parsed.fragment:
        raise SettingsError(f"{name}: {raw!r} must be an https URL without query or fragment "
                            "(http only for a loopback address)")
    return raw.rstrip("/")


def _table_prefix(name: str, raw: str) -> str:
    if raw and not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,19}", raw):
        raise SettingsError(f"{name}: {raw!r} must be letters and digits, starting with a letter, at most 20")
    return raw


def _optional_guid(name: str, raw: str) -> str:
    if raw and not is_guid(raw.strip()):
        raise SettingsError(f"{name}: {raw!r} is not a GUID (the application (client) id of the app registration)")
    return raw.strip().lower()


def _optional_tenant_id(name: str, raw: str) -> str:
    if raw.strip() and not is_guid(raw.strip()):
        raise SettingsError(f"{name}: {raw!r} is not a GUID (an Entra tenant id)")
    return raw.strip().lower()


_DOMAIN = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")


def _optional_domain(name: str, raw: str) -> str:
    value = raw.strip()
    if value and not _DOMAIN.fullmatch(value):
        raise SettingsError(f"{name}: {raw!r} is not a domain name such as contoso.onmicrosoft.com")
    return value.lower()


def _display_name(name: str, raw: str) -> str:
    """A name shown to customers (pages escape it): one line of printable text, 1..120 characters."""
    value = raw.strip()
    if not value or len(value) > 120 or not value.isprintable():
        raise SettingsError(f"{name}: {raw!r} must be one line of printable text, 1 to 120 characters")
    return value


def _one_of(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise SettingsError(f"{name}: {raw!r} must be one of {', '.join(choices)}")
        return value

    return parse


def _non_negative_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not an integer") from None
    if value < 0:
        raise SettingsError(f"{name}: {raw!r} must be zero (off) or more")
    return value


def _tcp_port(name: str, raw: str) -> int:
    value = _positive_int(name, raw)
    if value > 65535:
        raise SettingsError(f"{name}: {raw!r} is not a TCP port (1..65535)")
    return value


def _mail_address(name: str, raw: str) -> str:
    value = raw.strip()
    if value and not is_email(value):
        raise SettingsError(f"{name}: {raw!r} is not an e-mail address")
    return value


def _mail_addresses(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of e-mail addresses (may be empty)."""
    addresses = tuple(a.strip() for a in raw.split(",") if a.strip())
    for address in addresses:
        _mail_address(name, address)
    return addresses


def _optional_instant(name: str, raw: str) -> datetime | None:
    """An ISO 8601 date or date-time (UTC when no offset is given), or empty."""
    value = raw.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not an ISO 8601 date such as 2027-03-31 or "
                            "2027-03-31T12:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _token_key(name: str, raw: str) -> str:
    if len(raw) < 32:
        raise SettingsError(f"{name}: must be at least 32 characters (a random key, e.g. 64 hex digits)")
    return raw


# An app setting whose Key Vault reference the platform could not resolve reaches the code as its literal
# text (docs/SECURITY.md): treated as a value it would be a guessable secret, so it is an error instead.
_UNRESOLVED_KEY_VAULT_REFERENCE = re.compile(r"^\s*@Microsoft\.KeyVault\(", re.IGNORECASE)


SETTINGS: tuple[Setting, ...] = (
    # Storage for the app's own tables. In Azure: the table endpoint with the managed identity; locally:
    # a connection string to Azurite. Exactly one of the two is needed.
    Setting("TABLES_ENDPOINT", "Table service endpoint, e.g. https://<account>.table.core.windows.net "
            "(Azure; authenticated with the managed identity).", default="", parse=lambda n, r: r and _https_url(n, r)),
    Setting("TABLES_CONNECTION_STRING", "Connection string for the app's tables (local development with "
            "Azurite). Takes precedence over TABLES_ENDPOINT.", default="", secret=True),
    Setting("TABLES_NAME_PREFIX", "Optional prefix for the app's table names (several deployments in one "
            "storage account).", default="", parse=_table_prefix),
    Setting("AZURE_CLIENT_ID", "Client id of the function app's user-assigned managed identity (storage, "
            "federated credential).", default=""),
    # Schedules: read by the Functions host through %NAME% in the bindings.
    Setting("FETCH_ALERTS_SCHEDULE", "NCRONTAB schedule of the alert ingestion timer (UTC).",
            default="0 */5 * * * *", parse=_ncrontab, consumer="host"),
    Setting("DURABLE_HUB_NAME", "Durable Functions task hub name (host.json reads it).",
            default="msspalerts", consumer="host"),
    # Microsoft endpoints (sovereign clouds and the local cloud change them).
    Setting("ENTRA_AUTHORITY_HOST", "Entra ID authority host.", default="https://login.microsoftonline.com",
            parse=_https_url),
    Setting("ENTRA_DISABLE_INSTANCE_DISCOVERY", "true only for a non-Microsoft authority (the local cloud).",
            default="false", parse=_bool),
    Setting("GRAPH_API_HOST", "Microsoft Graph host.", default="https://graph.microsoft.com", parse=_https_url),
    Setting("DEFENDER_API_HOST", "Defender for Endpoint API host.", default="https://api.security.microsoft.com",
            parse=_https_url),
    Setting("DEFENDER_API_RESOURCE", "Defender for Endpoint token resource (scope = <resource>/.default).",
            default="https://api.securitycenter.microsoft.com", parse=_https_url),
    Setting("PORTAL_HOST", "Microsoft Defender portal host for deep links.",
            default="https://security.microsoft.com", parse=_https_url),
    Setting("HTTP_TIMEOUT_SECONDS", "Timeout of one outbound HTTP request.", default="30", parse=_positive_int),
    # The MSSP's multi-tenant app and how it proves itself to customer tenants (shared/identity.py).
    Setting("MSSP_APP_CLIENT_ID", "Application (client) id of the MSSP's multi-tenant app registration that "
            "customers consent to (a GUID).", default="", parse=_optional_guid),
    Setting("MSSP_APP_CREDENTIAL", "How the multi-tenant app authenticates to customer tenants: federated (no "
            "secret: the function app's managed identity, AZURE_CLIENT_ID, is a federated credential of the "
            "app), secret (MSSP_APP_CLIENT_SECRET) or certificate (MSSP_APP_CERTIFICATE).",
            default="federated", parse=_one_of("federated", "secret", "certificate")),
    Setting("MSSP_APP_CLIENT_SECRET", "Client secret of the multi-tenant app, when MSSP_APP_CREDENTIAL=secret "
            "(in Azure a Key Vault reference).", default="", secret=True),
    Setting("MSSP_APP_CERTIFICATE", "Certificate of the multi-tenant app with its private key, when "
            "MSSP_APP_CREDENTIAL=certificate: PEM text, a path to a PEM file, or base64 PKCS#12 (what a Key "
            "Vault reference to a certificate yields).", default="", secret=True),
    Setting("GRAPH_API_RESOURCE", "Microsoft Graph token resource (scope = <resource>/.default).",
            default="https://graph.microsoft.com", parse=_https_url),
    Setting("MSSP_APP_FEDERATION_AUDIENCE", "Audience of the managed identity's token that the federated "
            "credential exchanges (api://AzureADTokenExchangeUSGov or ...China in sovereign clouds).",
            default="api://AzureADTokenExchange"),
    # Onboarding and consent (grant_access).
    Setting("PUBLIC_BASE_URL", "Public base URL of the function app, e.g. https://<app>.azurewebsites.net; "
            "the consent redirect URI is <this>/api/consent/callback. Empty: https://<WEBSITE_HOSTNAME>. "
            "http is accepted for loopback only (local development).", default="", parse=_public_base_url),
    Setting("ONBOARDING_WEBHOOK_SECRET", "Shared secret of the onboarding webhook: when set, POST /api/tenants "
            "needs X-Signature-Timestamp: <Unix seconds, within 5 minutes> and X-Signature-SHA256: sha256=<hex "
            "HMAC-SHA256 of '<timestamp>.<body>'>, each signature accepted once; results POSTed to a "
            "callbackUrl carry the same headers.", default="", secret=True),
    Setting("INVITATION_TTL", "How long a consent link stays valid (a duration: 30s, 15m, 12h, 7d).",
            default="7d", parse=_duration),
    Setting("VERIFICATION_SCHEDULE", "NCRONTAB schedule of the timer that retries access verification of "
            "tenants whose consent has not propagated yet (UTC).", default="0 */2 * * * *", parse=_ncrontab,
            consumer="host"),
    Setting("VERIFICATION_TIMEOUT", "How long verification is retried after consent before the tenant is "
            "verification_failed (a duration).", default="24h", parse=_duration),
    Setting("OUTBOUND_ALLOW_LOOPBACK", "true lets outbound calls to given URLs (callbackUrl) reach loopback "
            "addresses; local development only, never in Azure.", default="false", parse=_bool),
    # The customer's first step of Microsoft's MSSP setup: portal access for the MSSP's analysts through Entra
    # B2B and access packages (grant_access/portal_access.py; the page after consent names these).
    Setting("MSSP_TENANT_ID", "The MSSP analysts' Entra tenant id (a GUID), which customers add as a connected "
            "organization to give the analysts Defender portal access. Empty: the page names MSSP_TENANT_DOMAIN "
            "only.", default="", parse=_optional_tenant_id),
    Setting("MSSP_TENANT_DOMAIN", "A verified domain of the MSSP analysts' tenant, e.g. mssp.onmicrosoft.com "
            "(customers can search the connected organization by it).", default="", parse=_optional_domain),
    Setting("MSSP_TIER1_GROUP", "Name of the customer-side group, Defender role and access package for the "
            "MSSP's Tier 1 analysts (every action except live response and security settings).",
            default="MSSP Tier 1 Analysts", parse=_display_name),
    Setting("MSSP_TIER2_GROUP", "Name of the customer-side group, Defender role and access package for the "
            "MSSP's Tier 2 analysts (Tier 1 plus live response).", default="MSSP Tier 2 Analysts",
            parse=_display_name),
    Setting("MSSP_APPROVERS_GROUP", "Name of the customer-side group and access package of the MSSP's analyst "
            "approvers, who approve the analysts' access requests in My Access.",
            default="MSSP Analyst Approvers", parse=_display_name),
    Setting("MSSP_ACCESS_CATALOG", "Name of the Identity Governance catalog that holds the MSSP's access packages "
            "in the customer's tenant.", default="MSSP Accesses", parse=_display_name),
    # Alert ingestion (fetch_alerts).
    Setting("FETCH_CONCURRENCY", "How many tenants one instance ingests at once (the worker threads of the "
            "ingest_tenant queue function); keep it equal to host.json's queues batchSize + newBatchThreshold.",
            default="16", parse=_positive_int),
    Setting("FETCH_OVERLAP_MINUTES", "Each run re-reads this many minutes before the tenant's cursor, so "
            "alerts that become visible late (ingestion lag) are caught.", default="15", parse=_positive_int),
    Setting("FETCH_LOOKBACK_DAYS", "How far back a new tenant's first runs read (the backfill).", default="7",
            parse=_positive_int),
    Setting("FETCH_MAX_PAGES_PER_TENANT", "Pages one tick reads per tenant at most; a larger backlog continues "
            "at the next tick, so one tenant cannot starve the others.", default="100", parse=_positive_int),
    Setting("FETCH_REREAD_PAGES_PER_TICK", "Pages (API calls) per tenant per tick at most for the slower re-reads "
            "that catch alerts visible later than the overlap (hourly over the last 26 h, daily over the "
            "look-back), right after the tenant's own regular pass when it completed.", default="4",
            parse=_positive_int),
    Setting("FETCH_TIME_BUDGET_SECONDS", "Ingestion of one tenant (one queue message: its regular pass, then its "
            "re-reads) stops starting new pages after this many seconds (keep it well below host.json "
            "functionTimeout); progress is kept. The daily retention clean-up has the same budget.", default="480",
            parse=_positive_int),
    Setting("FETCH_MESSAGE_TTL_SECONDS", "Time-to-live of the per-tenant messages each ingestion tick enqueues: "
            "about one FETCH_ALERTS_SCHEDULE interval, so a message no instance reached before the next tick "
            "expires instead of piling up behind that tick's own message for the tenant.", default="300",
            parse=_positive_int),
    Setting("FETCH_DRAIN_WAIT_SECONDS", "How long after its start the ingestion timer waits for its tenants' "
            "messages to be processed before it starts the tick's notification run (keep it below the "
            "schedule interval); what is still in the queue then is e-mailed by the next tick's run.",
            default="240", parse=_positive_int),
    Setting("FETCH_LEASE_SECONDS", "Length of the per-tenant ingestion lease that keeps two instances off one "
            "tenant; renewed every third of it while the tenant is ingested, taken over by another instance "
            "only once it expired.", default="60", parse=_positive_int),
    Setting("FETCH_GRAPH_PAGE_SIZE", "$top of Graph alerts_v2 list calls (1..1000).", default="1000",
            parse=_positive_int),
    Setting("FETCH_DEFENDER_PAGE_SIZE", "$top of Defender list calls (1..10000); a time window that comes back "
            "full is split.", default="1000", parse=_positive_int),
    Setting("FETCH_MAX_ATTEMPTS", "Attempts per API call on 429, 5xx, timeouts and dropped connections.",
            default="5", parse=_positive_int),
    Setting("FETCH_BACKOFF_MS", "Base of the exponential backoff (with full jitter) between attempts.",
            default="500", parse=_positive_int),
    Setting("GRAPH_CALLS_PER_MINUTE", "Graph alerts calls per tenant per minute (Microsoft: 150).",
            default="150", parse=_positive_int),
    Setting("DEFENDER_CALLS_PER_MINUTE", "Defender API calls per tenant per minute (Microsoft: 100).",
            default="100", parse=_positive_int),
    Setting("DEFENDER_CALLS_PER_HOUR", "Defender API calls per tenant per hour (Microsoft: 1,500).",
            default="1500", parse=_positive_int),
    Setting("GLOBAL_API_CALLS_PER_MINUTE", "Alert API calls per minute across the tenants one instance ingests "
            "(Microsoft does not say whether Defender's limit is per tenant or per app; each instance keeps its own "
            "count).", default="6000", parse=_positive_int),
    Setting("RETENTION_DAYS", "Alerts not updated for this many days are deleted by the daily clean-up.",
            default="180", parse=_positive_int),
    Setting("RETENTION_SCHEDULE", "NCRONTAB schedule of the daily retention clean-up (UTC).",
            default="0 30 3 * * *", parse=_ncrontab, consumer="host"),
    Setting("OPS_NOTICES_SCHEDULE", "NCRONTAB schedule of the operational-notices check (UTC).",
            default="0 */5 * * * *", parse=_ncrontab, consumer="host"),
    # The SIEM pull API (GET /api/alerts).
    Setting("SIEM_TOKEN_KEY", "Key that MACs the SIEM pull API's continuation tokens (HMAC-SHA256; at least 32 "
            "characters; in Azure a Key Vault reference). Every instance must hold the same key, and tokens "
            "handed out stay valid while it does; changing it makes outstanding tokens invalid (400).",
            default="", parse=lambda n, r: r and _token_key(n, r), secret=True),
    Setting("SIEM_FEED_SETTLE_SECONDS", "The SIEM pull API serves only feed rows stored at least this long ago, so "
            "a storage transaction that commits a moment after its timestamp cannot land behind a page a SIEM "
            "already read (longer than a write's retries may take).", default="30", parse=_positive_int),
    # The notification run's delivery (notify_mssp orchestrator).
    Setting("DUPLICATE_POLICY", "What a notification run does with an e-mail whose delivery-log claim has no "
            "'sent' mark (a crash between send and mark, or an abandoned run): resend (never lose a "
            "notification) or skip (never send twice). Either way it is counted as a possible duplicate.",
            default="resend", parse=_one_of("resend", "skip")),
    Setting("NOTIFY_CLAIM_TIMEOUT", "After how long a claim on an obligation or an e-mail by a run that never "
            "finished is taken as abandoned and taken over by a later run (a duration; longer than a run "
            "takes).", default="30m", parse=_duration),
    Setting("NOTIFY_BATCH_SIZE", "E-mails per send sub-orchestration (keeps each history small).",
            default="100", parse=_positive_int),
    Setting("NOTIFY_SEND_MAX_ATTEMPTS", "Attempts per e-mail within one run on transient failures; what is "
            "still failing then carries over to the next run.", default="4", parse=_positive_int),
    Setting("NOTIFY_RETRY_BACKOFF_SECONDS", "First wait before retrying transient send failures; doubles per "
            "attempt (a Retry-After from the transport wins when longer), at most 5 minutes.", default="5",
            parse=_positive_int),
    Setting("NOTIFY_GIVE_UP_AFTER_RUNS", "Runs in which an e-mail failed transiently before it is recorded as "
            "a permanent failure.", default="12", parse=_positive_int),
    Setting("NOTIFY_DIGEST_MAX_ITEMS", "Alerts listed in one digest e-mail; the rest are counted.",
            default="50", parse=_positive_int),
    # E-mail transports, the send rate cap and operational notices (notify_mssp).
    Setting("MAIL_TRANSPORT", "How e-mail leaves: smtp (SMTP_HOST, optional STARTTLS and login; MailDev locally) or "
            "graph (Microsoft Graph sendMail from MAIL_SENDER's mailbox in the MSSP's own tenant, see "
            "MAIL_CREDENTIAL).", default="smtp", parse=_one_of("smtp", "graph")),
    Setting("MAIL_SENDER", "From address of every e-mail; with MAIL_TRANSPORT=graph the mailbox (UPN or "
            "address) that sends, which the credential's Mail.Send must be allowed to use.",
            default="alerts@mssp.example", parse=_mail_address),
    Setting("MAIL_SENDER_NAME", "Display name of the From address.", default="MSSP alert notifications"),
    Setting("SMTP_HOST", "SMTP server (MAIL_TRANSPORT=smtp).", default=""),
    Setting("SMTP_PORT", "SMTP server port (25, or 587 with STARTTLS).", default="25", parse=_tcp_port),
    Setting("SMTP_STARTTLS", "true: upgrade the SMTP connection with STARTTLS (certificate checked) before "
            "anything else; needed for SMTP_USERNAME unless the server is on loopback.", default="false",
            parse=_bool),
    Setting("SMTP_USERNAME", "SMTP login user; empty: no login.", default=""),
    Setting("SMTP_PASSWORD", "SMTP login password (in Azure a Key Vault reference).", default="", secret=True),
    Setting("MAIL_CREDENTIAL", "Who holds Mail.Send for MAIL_TRANSPORT=graph, always in the MSSP's own tenant and "
            "never the multi-tenant app (docs/ARCHITECTURE.md, invariant 8): managed_identity (the function app's, "
            "AZURE_CLIENT_ID) or secret (a single-tenant app: MAIL_APP_TENANT_ID, MAIL_APP_CLIENT_ID, "
            "MAIL_APP_CLIENT_SECRET).", default="managed_identity", parse=_one_of("managed_identity", "secret")),
    Setting("MAIL_APP_TENANT_ID", "The MSSP's own tenant id, home of the single-tenant mail app "
            "(MAIL_CREDENTIAL=secret).", default="", parse=_optional_guid),
    Setting("MAIL_APP_CLIENT_ID", "Application (client) id of the single-tenant mail app (MAIL_CREDENTIAL=secret).",
            default="", parse=_optional_guid),
    Setting("MAIL_APP_CLIENT_SECRET", "Client secret of the single-tenant mail app (MAIL_CREDENTIAL=secret; in "
            "Azure a Key Vault reference).", default="", secret=True),
    Setting("MAIL_RETRY_BUDGET_SECONDS", "How long one Graph send may wait in total for Retry-After on 429 and "
            "5xx before it reports a transient failure (the run retries it later).", default="30",
            parse=_positive_int),
    Setting("SEND_RATE_PER_MINUTE", "E-mails sent in any 60 seconds at most, across all instances (Exchange "
            "Online allows 30 a minute per mailbox); 0 switches the cap off. Sends over it carry over to the next "
            "run.",
            default="30", parse=_non_negative_int),
    Setting("SEND_RATE_PER_DAY", "E-mails sent in any 24 hours at most (Exchange Online: 10,000 recipients a "
            "day per mailbox); 0 switches the cap off.", default="10000", parse=_non_negative_int),
    Setting("OPS_EMAIL", "Where operational notices go (comma-separated addresses): consent revoked, "
            "permission removed, not licensed, failing or silent tenants, onboarding backfill counts, the "
            "MSSP credential failing or expiring. Empty: notices are only recorded and logged.", default="",
            parse=_mail_addresses),
    Setting("OPS_FAILING_RUNS", "A tenant whose ingestion failed this many runs in a row gets an operational "
            "notice.", default="3", parse=_positive_int),
    Setting("OPS_SILENT_HOURS", "An active tenant with no alert stored for this many hours gets an operational "
            "notice.", default="48", parse=_positive_int),
    Setting("OPS_CREDENTIAL_WARNING_DAYS", "Notice this many days before the MSSP credential expires (the "
            "certificate's expiry, or MSSP_CREDENTIAL_EXPIRES_AT).", default="30", parse=_positive_int),
    Setting("MSSP_CREDENTIAL_EXPIRES_AT", "Expiry of the multi-tenant app's client secret (ISO 8601 date), for "
            "the expiry notice; a certificate's expiry is read from the certificate itself.", default="",
            parse=_optional_instant),
)

_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


class Settings:
    """Validated settings, read lazily from an environment mapping."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self._cache: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        if name not in self._cache:
            setting = _BY_NAME.get(name)
            if setting is None:
                raise KeyError(f"{name} is not a registered setting (add it to shared.settings.SETTINGS)")
            raw = self._environ.get(name)
            if raw is not None and _UNRESOLVED_KEY_VAULT_REFERENCE.match(raw):
                raise SettingsError(f"{name} is an unresolved Key Vault reference: the platform could not read "
                                    "the secret (check the vault, the secret name and the app identity's access)")
            if raw is None or (raw == "" and setting.default is None):
                if setting.default is None:
                    raise SettingsError(f"{name} is not set: {setting.description}")
                raw = setting.default
            self._cache[name] = setting.parse(name, raw)
        return self._cache[name]

    def require(self, name: str) -> Any:
        """The value of a setting that must not be empty here."""
        value = self.get(name)
        if value in ("", None):
            raise SettingsError(f"{name} is not set: {_BY_NAME[name].description}")
        return value

    def validate(self, names: tuple[str, ...] | None = None) -> None:
        """Read (and so check) every named setting, or every registered one."""
        for name in names or tuple(_BY_NAME):
            self.get(name)


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, validated at first use of each."""
    return Settings(os.environ)


# --- typed configuration objects --------------------------------------------------------------------------
#
# Each flow reads its settings through frozen dataclasses whose fields name the registered setting they hold
# (`setting("NAME")`); `load_config` fills one from a `Settings`. Names, defaults and parsing stay in
# `SETTINGS`: a field only says which registered setting it is, and its type is what the parser returns.


def setting(name: str, *, required: bool = False) -> Any:
    """A config-object field holding the registered setting `name` (`required`: must not be empty)."""
    if name not in _BY_NAME:
        raise KeyError(f"{name} is not a registered setting (add it to shared.settings.SETTINGS)")
    return dataclasses.field(metadata={"setting": name, "required": required})


def load_config(cls: type[_Config], settings: Settings | None = None) -> _Config:
    """A config object read from `settings` (the process-wide settings by default); a missing or malformed
    value raises SettingsError naming the setting, at the invocation that builds the object."""
    current = settings or get_settings()
    values = {
        f.name: (current.require if f.metadata.get("required") else current.get)(f.metadata["setting"])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }
    return cls(**values)
