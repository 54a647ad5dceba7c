"""Typed settings of the notification flow: frozen config objects built in notify_mssp.wiring (or by the
classes that take them) from the settings registry (shared.settings.SETTINGS holds every name, default and
parser)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings, load_config, setting


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
