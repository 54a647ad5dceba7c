"""Everything the local cloud holds in memory, shared by the Microsoft-facing routes and the control API."""

from __future__ import annotations

from dataclasses import dataclass, field

from local.cloud.alerts import AlertStore
from local.cloud.clock import CloudClock
from local.cloud.directory import Directory
from local.cloud.entra import TokenSigner
from local.cloud.faults import FaultBoard, RateLimiter, Stats
from local.cloud.mail import Mailbox

DEFAULT_TOKEN_LIFETIME_SECONDS = 3599


@dataclass
class CloudState:
    clock: CloudClock = field(default_factory=CloudClock)
    directory: Directory = field(default_factory=Directory)
    signer: TokenSigner = field(default_factory=TokenSigner)
    faults: FaultBoard = field(default_factory=FaultBoard)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    stats: Stats = field(default_factory=Stats)
    mailbox: Mailbox = field(default_factory=Mailbox)
    alerts: AlertStore = field(default_factory=AlertStore)
    token_lifetime_seconds: int = DEFAULT_TOKEN_LIFETIME_SECONDS
