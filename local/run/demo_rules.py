"""The notification rules `make run` shows: created through the rules API with the function key, as
an MSSP would, so the demo's alerts reach MailDev's inbox in all three shapes: one e-mail per alert, a
digest per run, and a rule limited to a device group of the simulated customers ("Servers", one of the
local cloud's default device groups)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import requests

logger = logging.getLogger(__name__)

DEMO_RULES: tuple[dict[str, Any], ...] = (
    {"name": "SOC: high and medium alerts, every customer", "severities": ["High", "Medium"],
     "recipients": ["soc@mssp.example"], "mode": "per-alert", "notifyOnSeverityRise": True},
    {"name": "SOC lead: digest of every alert", "recipients": ["soc-lead@mssp.example"], "mode": "digest"},
    {"name": "Server team: alerts on servers", "deviceGroups": ["Servers"], "recipients": ["servers@mssp.example"],
     "mode": "per-alert"},
)


class _Host(Protocol):
    url: str
    function_key: str


class _Stack(Protocol):
    host: _Host | None


def install_demo_rules(stack: _Stack) -> list[str]:
    """Create the demo rules (MSSP-wide) through POST /api/notification-rules; their ids. A rule that already
    exists (a second call) is answered 409 and skipped."""
    if stack.host is None:
        raise RuntimeError("the local host is not running")
    ids = []
    for rule in DEMO_RULES:
        response = requests.post(f"{stack.host.url}/api/notification-rules", json=rule, timeout=30,
                                 headers={"x-functions-key": stack.host.function_key})
        if response.status_code == 409:
            logger.info("demo rule %r exists already", rule["name"])
            continue
        if response.status_code != 201:
            raise RuntimeError(f"demo rule {rule['name']!r} refused: {response.status_code} {response.text[:300]}")
        ids.append(response.json()["id"])
    return ids
