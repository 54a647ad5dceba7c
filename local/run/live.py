"""What `make run` keeps doing once the demo customers are active: a new alert in a demo customer's tenant in
the local cloud every `ALERT_EVERY_SECONDS`, while the product's own timers ingest them every minute and each
tick's notification run e-mails the rules' recipients (demo.LIVE_SCHEDULES); and what the status line reads
from the inbox (alert e-mails apart from the ops notices).

The first alert is raised before the first ingestion tick and is visible at once, so it is e-mailed within
seconds of start; every later one, raised at second 20 of each minute, obeys the streams' ingestion lag
(demo.DEMO_LAG_SECONDS) and reaches the inbox through the scheduled tick on the next minute.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.run.cycle import CycleReport, fire_timer
from local.run.demo import CUSTOMERS, OPS_EMAIL, DemoCustomer
from local.run.demo_rules import install_demo_rules
from local.run.onboarding import onboard_demo_tenants
from local.run.stack import LocalStack, cloud_now

logger = logging.getLogger(__name__)

STATE_FILE = "demo.json"  # where `python -m local.run.try` finds the running demo
ALERT_EVERY_SECONDS = 60.0
# Each later alert is raised at this second of the minute, so with the streams' 30 s lag it is visible 10 s
# before the ingestion tick on the minute (demo.LIVE_SCHEDULES) and e-mailed some 40 s after it was raised.
ALERT_SECOND = 20.0
# Rotations of different lengths, so each customer sees every severity and device group in turn. High and
# medium reach the SOC rule, servers the server team's, every alert the lead's digest (demo_rules.py).
SEVERITIES = ("high", "medium", "low", "medium", "high")
GROUPS = ("Servers", "Workstations", "Finance workstations", "Servers")
TITLES = ("Suspicious PowerShell command line", "Ransomware behavior detected on a device",
          "Credential dumping tool activity", "Suspicious inbox forwarding rule created",
          "Connection to a known command-and-control server", "Unusual sign-in followed by mass file download")


@dataclass(frozen=True)
class Inbox:
    """MailDev's inbox split by kind: alert notifications (per-alert and digests) and ops notices."""

    alert_emails: list[dict[str, Any]]
    notices: list[dict[str, Any]]

    @classmethod
    def of(cls, messages: list[dict[str, Any]]) -> Inbox:
        def to_ops(message: dict[str, Any]) -> bool:
            return any(str(t.get("address", "")).lower() == OPS_EMAIL for t in message.get("to") or [])

        return cls([m for m in messages if not to_ops(m)], [m for m in messages if to_ops(m)])


def is_alert_email(message: dict[str, Any]) -> bool:
    return bool(Inbox.of([message]).alert_emails)


@dataclass
class LiveDemo:
    """New alerts for the demo customers at a steady pace, and what the inbox shows of them."""

    stack: LocalStack
    every: float = ALERT_EVERY_SECONDS
    started: float = field(default_factory=time.monotonic)
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time  # when alerts are due: aligned on the ingestion ticks' minutes
    raised: list[dict[str, Any]] = field(default_factory=list)
    next_at: float = 0.0
    first_alert_email: dict[str, Any] | None = None
    first_alert_email_after: float | None = None

    def raise_alert(self, *, visible_now: bool = False) -> dict[str, Any]:
        """Raise the next alert of the rotation in its customer's tenant; the alert as the cloud answers."""
        index = len(self.raised)
        customer: DemoCustomer = CUSTOMERS[index % len(CUSTOMERS)]
        fields: dict[str, Any] = {"severity": SEVERITIES[index % len(SEVERITIES)],
                                  "deviceGroup": GROUPS[index % len(GROUPS)], "title": TITLES[index % len(TITLES)]}
        if visible_now:
            fields["visibleAt"] = cloud_now(self.stack).isoformat().replace("+00:00", "Z")
        alert = self.stack.cloud.control("POST", f"tenants/{customer.tenant_id}/alerts", json=fields).json()
        alert["customer"] = customer.name
        self.raised.append(alert)
        self.next_at = self._next_slot()
        logger.info("new %s alert for %s in the local cloud: %s", fields["severity"], customer.name,
                    alert.get("title"))
        return alert

    def _next_slot(self) -> float:
        """The next second ALERT_SECOND of a minute at least 10 s away (wall clock)."""
        now = self.wall()
        slot = now - now % 60 + ALERT_SECOND
        while slot < now + 10:
            slot += self.every
        return slot

    def raise_if_due(self) -> dict[str, Any] | None:
        return self.raise_alert() if self.wall() >= self.next_at else None

    def inbox(self) -> Inbox:
        inbox = Inbox.of(self.stack.maildev.messages() if self.stack.maildev is not None else [])
        if inbox.alert_emails and self.first_alert_email is None:
            self.first_alert_email = inbox.alert_emails[0]  # MailDev lists the oldest first
            self.first_alert_email_after = self.clock() - self.started
        return inbox

    def status_text(self, inbox: Inbox) -> str:
        wait = max(0, round(self.next_at - self.wall()))
        text = (f"demo alerts raised: {len(self.raised)} (next in {wait} s); "
                f"inbox: {len(inbox.alert_emails)} alert e-mails, {len(inbox.notices)} ops notices")
        if inbox.alert_emails:
            text += f"; latest: \"{str(inbox.alert_emails[-1].get('subject', ''))[:90]}\""
        return text


def start_live_demo(stack: LocalStack, live: LiveDemo | None = None) -> list[dict[str, str]]:
    """What `make run` does once at start: onboard the demo customers, install the demo rules, raise the first
    new alert (with `live`) and run the first ingestion tick now rather than at the next scheduled one, so the
    backfill and the first alert e-mail come at once. Failures are returned, not raised."""
    report = CycleReport()
    steps: list[tuple[str, Callable[[LocalStack], object]]] = [
        ("onboarding", onboard_demo_tenants), ("notification rules", install_demo_rules)]
    if live is not None:
        steps.append(("first new alert", lambda s: live.raise_alert(visible_now=True)))
    steps.append(("first tick", lambda s: fire_timer(s, "fetch_alerts")))
    for where, step in steps:
        try:
            step(stack)
        except Exception as exc:
            report.error(where, f"{type(exc).__name__}: {exc}")
    return report.errors


def write_state(stack: LocalStack) -> Path:
    """Where the running demo is, for `python -m local.run.try`: in the run folder, readable by the owner only
    (it holds the function key and the webhook secret, like the host's settings file beside it)."""
    assert stack.host is not None
    path = stack.workdir / STATE_FILE
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps({
        "hostUrl": stack.host.url, "functionKey": stack.host.function_key, "cloudUrl": stack.cloud.url,
        "caPath": str(stack.cloud.ca_path), "webhookSecret": stack.settings.get("ONBOARDING_WEBHOOK_SECRET", ""),
        "mailUrl": stack.maildev.web_url if stack.maildev is not None else "",
    }, indent=2))
    return path
