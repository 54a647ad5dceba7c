"""Builds what the notification triggers pass to the plain functions: stores over the app's tables, the send
context (delivery log, transport, send cap), the rules repository, the e-mail sender and the typed config
(notify_mssp.config). Everything is built at first use, never at import time (docs/ARCHITECTURE.md,
invariant 6), so a missing setting fails one invocation with a clear message."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from azure.core.credentials import TokenCredential
from azure.data.tables import TableClient

from notify_mssp.config import (
    CredentialExpiryConfig,
    DeliveryConfig,
    MailAppSecretConfig,
    MailConfig,
    MailCredentialConfig,
    OpsNoticeConfig,
    RunConfig,
    Thresholds,
)
from notify_mssp.delivery import DeliveryLog
from notify_mssp.email import Sender
from notify_mssp.incident_records import NoticeContext
from notify_mssp.obligations import ObligationStore
from notify_mssp.ops_notices import OpsChecks
from notify_mssp.ratecap import SendRateCap
from notify_mssp.sender import SendContext
from notify_mssp.transports import Transport, build_transport, mail_credential
from shared.rules import RuleRepository
from shared.settings import Settings, get_settings
from shared.tables import Table, get_table_store
from shared.tenants import TenantRegistry


def utcnow() -> datetime:
    return datetime.now(UTC)


def settings() -> Settings:
    return get_settings()


def table(name: Table) -> TableClient:
    return get_table_store().table(name)


def tenants() -> TenantRegistry:
    return TenantRegistry(table(Table.TENANTS))


def rules() -> RuleRepository:
    return RuleRepository(table(Table.NOTIFICATION_RULES))


def obligations() -> ObligationStore:
    return ObligationStore(table(Table.ALERTS), table(Table.TENANTS))


def run_config() -> RunConfig:
    return RunConfig.from_settings(settings())


def delivery_config() -> DeliveryConfig:
    return DeliveryConfig.from_settings(settings())


def claim_timeout() -> timedelta:
    return timedelta(seconds=delivery_config().claim_timeout_seconds)


def delivery_log() -> DeliveryLog:
    config = delivery_config()
    return DeliveryLog(table(Table.DELIVERY_LOG), policy=config.duplicate_policy,
                       stale_after=timedelta(seconds=config.claim_timeout_seconds),
                       give_up_after_runs=config.give_up_after_runs)


def send_rate_cap() -> SendRateCap:
    return SendRateCap.from_settings(table(Table.SEND_RATE), settings())


def mail_config() -> MailConfig:
    return MailConfig.from_settings(settings())


def _mail_credential() -> TokenCredential:
    """Graph's mail credential (MAIL_CREDENTIAL), built at the transport's first send."""
    current = settings()
    return mail_credential(MailCredentialConfig.from_settings(current),
                           lambda: MailAppSecretConfig.from_settings(current))


_transport: Transport | None = None
_transport_lock = threading.Lock()


def transport() -> Transport:
    """The worker's one transport (MAIL_TRANSPORT), built at its first use and kept: SMTP keeps a connection per
    thread, Graph its token and session. A build that fails (a missing setting) is not kept: the next use tries
    again."""
    global _transport
    with _transport_lock:
        if _transport is None:
            _transport = build_transport(mail_config(), _mail_credential)
        return _transport


def sender() -> Sender:
    return Sender.from_settings(settings())


def send_context() -> SendContext:
    cap = send_rate_cap()
    return SendContext(alerts=table(Table.ALERTS), tenants=table(Table.TENANTS),
                       rules_table=table(Table.NOTIFICATION_RULES), log=delivery_log(),
                       transport=transport(), acquire=cap.try_acquire)


def notice_context() -> NoticeContext:
    """What the operational notices are recorded in and sent with: the Incidents table, OPS_EMAIL, the worker's
    transport (built at the first notice) and the shared send cap."""
    incidents = table(Table.INCIDENTS)
    return NoticeContext(incidents=incidents, recipients=OpsNoticeConfig.from_settings(settings()).recipients,
                         transport=transport, rate_cap=send_rate_cap())


def ops_checks() -> OpsChecks:
    """The thresholds of the operational checks and what says when the MSSP's credential expires."""
    from shared.app_credentials import AppCertificateConfig, certificate_source

    current = settings()
    return OpsChecks(limits=Thresholds.from_settings(current), credential=CredentialExpiryConfig.from_settings(current),
                     certificate=lambda: certificate_source(AppCertificateConfig.from_settings(current).certificate))
