"""`python -m local.run.try`: what an operator tries next against a running `make run`, as short commands.

    python -m local.run.try onboard "Tailspin Toys" tailspin.example [--source defender] [--accept]
    python -m local.run.try alert contoso.example [--severity high]
    python -m local.run.try escalate contoso.example [--to high]

`onboard` creates the customer's tenant in the local cloud (where the customer's Microsoft tenant would
be), sends the signed onboarding webhook (POST /api/tenants, the signature computed now) and prints the
admin-consent link; `--accept` answers the consent page by script instead of a browser. `alert` raises a
new alert in a customer's tenant (the local cloud's control API); `escalate` raises the severity of the
customer's newest alert that is below it, which the SOC rule e-mails as a severity rise.

It reads where everything runs from the run folder `make run` writes (`--workdir`, default .local/run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from local.run.live import STATE_FILE
from local.run.onboarding import answer_consent, post_invitation
from local.run.services import REPO_ROOT

DEFAULT_WORKDIR = REPO_ROOT / ".local" / "run"
_RANK = {"informational": 0, "low": 1, "medium": 2, "high": 3}


class Demo:
    """The running demo, as `make run` described it in its run folder."""

    def __init__(self, workdir: Path) -> None:
        path = workdir / STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            raise SystemExit(f"{path} is missing: is `make run` running (with this --workdir)?") from None
        self.host_url: str = state["hostUrl"]
        self.function_key: str = state["functionKey"]
        self.cloud_url: str = state["cloudUrl"]
        self.ca_path = Path(state["caPath"])
        self.webhook_secret: str = state.get("webhookSecret", "")

    def control(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.cloud_url}/control/{path}", verify=str(self.ca_path), timeout=30,
                                **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.host_url}/api/{path}", timeout=60,
                                headers={"x-functions-key": self.function_key}, **kwargs)


def _fail(response: requests.Response, what: str) -> None:
    if response.status_code >= 400:
        raise SystemExit(f"{what}: {response.status_code} {response.text[:300]}")


def onboard(demo: Demo, name: str, domain: str, source: str, accept: bool) -> int:
    if demo.control("GET", f"tenants/{domain}").status_code == 404:
        start = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        created = demo.control("POST", "tenants", json={
            "id": str(uuid.uuid4()), "domains": [domain], "displayName": name, "defenderLicensed": True,
            "alerts": {"seed": domain, "start": start, "alertsPerHour": 2, "lagSeconds": 30}})
        _fail(created, "creating the tenant in the local cloud")
        print(f"tenant {domain} created in the local cloud ({created.json()['id']}), a day of alerts in it")
    response = post_invitation(demo.host_url, demo.function_key, demo.webhook_secret, {
        "customerName": name, "tenantId": domain, "alertSource": source, "externalId": f"try-{domain}",
        "contactEmail": f"it@{domain}"})
    _fail(response, "POST /api/tenants")
    invitation = response.json()
    link = invitation.get("consentUrl")
    if not link:  # the same externalId again: the link is shown once; a fresh one for the tenant
        tenant_id = demo.control("GET", f"tenants/{domain}").json()["id"]
        fresh = demo.api("POST", f"tenants/{tenant_id}/consent")
        _fail(fresh, "a fresh consent link")
        link = fresh.json()["consentUrl"]
    print(f"invitation {invitation.get('id')} for {name}: "
          f"{invitation.get('outcome')}")
    if not accept:
        print(f"admin-consent link (what the customer's admin opens):\n  {link}\n"
              f"Open it in a browser: the local cloud's certificate comes from its own CA ({demo.ca_path}), so "
              "accept the browser's warning (or import that CA). Accept on the consent page: it leads back to "
              "the app's /api/consent/callback, and the tenant becomes active.")
        return 0
    print(f"consent page answered: {answer_consent(link, 'accept', demo.ca_path)}")
    tenant_id = demo.control("GET", f"tenants/{domain}").json()["id"]
    deadline = time.monotonic() + 30
    status = "?"
    while time.monotonic() < deadline:
        status = str(demo.api("GET", f"tenants/{tenant_id}").json().get("status"))
        if status == "active":
            break
        time.sleep(1)
    print(f"tenant {tenant_id}: {status}")
    return 0


def alert(demo: Demo, tenant: str, severity: str) -> int:
    response = demo.control("POST", f"tenants/{tenant}/alerts", json={"severity": severity})
    _fail(response, "raising the alert")
    body = response.json()
    print(f"{body['severity']} alert {body['id']} raised in {tenant}: {body.get('title')}")
    return 0


def escalate(demo: Demo, tenant: str, to: str) -> int:
    response = demo.control("GET", f"tenants/{tenant}/alerts")
    _fail(response, "reading the tenant's alerts")
    cloud_tenant = demo.control("GET", f"tenants/{tenant}").json()
    activated = str(demo.api("GET", f"tenants/{cloud_tenant['id']}").json().get("activatedAt") or "")
    # Only an alert created after the tenant became active is news (like a new one, fetch_alerts/store.py).
    candidates = [a for a in response.json()["alerts"]
                  if _RANK.get(str(a["severity"]).lower(), 0) < _RANK[to] and str(a["createdDateTime"]) >= activated]
    if not candidates:
        # A rise needs an alert the product has already stored at the lower level: raise one now; the
        # same command run again after the next ingestion tick (a minute in the demo) raises its severity.
        alert(demo, tenant, "low")
        print(f"no alert below {to} was raised in {tenant} since it became active, so a low one was raised "
              "now; run this command again after the next ingestion tick (about a minute) to raise its severity")
        return 0
    newest = max(candidates, key=lambda a: str(a["createdDateTime"]))
    changed = demo.control("PATCH", f"tenants/{tenant}/alerts/{newest['id']}", json={"severity": to})
    _fail(changed, "changing the severity")
    print(f"alert {newest['id']} in {tenant}: severity {newest['severity']} -> {changed.json()['severity']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.run.try", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="make run's run folder")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("onboard", help="onboard a new customer")
    p.add_argument("name")
    p.add_argument("domain")
    p.add_argument("--source", choices=("graph", "defender"), default="graph")
    p.add_argument("--accept", action="store_true", help="answer the consent page by script")
    p = commands.add_parser("alert", help="raise a new alert in a customer's tenant")
    p.add_argument("tenant", help="tenant GUID or domain")
    p.add_argument("--severity", choices=tuple(_RANK), default="high")
    p = commands.add_parser("escalate", help="raise the severity of a customer's newest alert")
    p.add_argument("tenant", help="tenant GUID or domain")
    p.add_argument("--to", choices=("medium", "high"), default="high")
    args = parser.parse_args(argv)
    demo = Demo(args.workdir)
    if args.command == "onboard":
        return onboard(demo, args.name, args.domain, args.source, args.accept)
    if args.command == "alert":
        return alert(demo, args.tenant, args.severity)
    return escalate(demo, args.tenant, args.to)


if __name__ == "__main__":
    sys.exit(main())
