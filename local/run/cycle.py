"""One full product cycle on the local platform, and the summary `make run ARGS=--once` prints.

A cycle is what an MSSP sees in its first minutes: the demo tenants onboard, the ingestion timer ticks
once, and the notification run it starts finishes. The
summary's keys are fixed: tenants, alerts_stored, emails_delivered, duplicates, failures, errors.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from azure.data.tables import TableClient, TableServiceClient

from local.run.demo import CUSTOMERS, DEMO_LAG_SECONDS
from local.run.demo_rules import install_demo_rules
from local.run.onboarding import onboard_demo_tenants
from local.run.stack import LocalStack
from notify_mssp.delivery import DeliveryState
from shared.tables import Table

logger = logging.getLogger(__name__)

DURABLE_API = "runtime/webhooks/durabletask"
NOTIFY_ORCHESTRATOR = "notify_mssp"


@dataclass
class CycleReport:
    """What one cycle did, shaped into the one-line JSON summary."""

    errors: list[dict[str, str]] = field(default_factory=list)
    emails_before: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    def error(self, where: str, message: str) -> None:
        logger.error("%s: %s", where, message)
        self.errors.append({"where": where, "message": message})


def fire_timer(stack: LocalStack, name: str) -> None:
    """Run a timer function now, as the portal's "Test/Run" does, through the host's admin API."""
    assert stack.host is not None
    response = stack.host.admin("POST", f"functions/{name}", json={"input": ""})
    if response.status_code != 202:
        raise RuntimeError(f"admin run of {name} answered {response.status_code}: {response.text[:200]}")


def finished_invocations(stack: LocalStack, name: str) -> int:
    """How many invocations of a function have ended (succeeded, failed or timed out), from the host's stats."""
    assert stack.host is not None
    counts = stack.host.admin("GET", "local/stats").json()["invocations"]["functions"].get(name, {})
    return sum(int(counts.get(k, 0)) for k in ("succeeded", "failed", "timed_out"))


def orchestration_instances(stack: LocalStack, name: str, created_from: datetime) -> list[dict[str, Any]]:
    """Instances of one orchestrator created since a time, from the Durable HTTP API."""
    assert stack.host is not None
    response = requests.get(
        f"{stack.host.url}/{DURABLE_API}/instances",
        params={"code": stack.host.master_key,
                "createdTimeFrom": created_from.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        timeout=30,
    )
    response.raise_for_status()
    return [i for i in response.json() if i.get("name") == name]


def wait_for_orchestration(stack: LocalStack, name: str, created_from: datetime,
                           timeout: float = 120.0) -> dict[str, Any]:
    """The first instance of `name` created since `created_from`, once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        instances = orchestration_instances(stack, name, created_from)
        finished = [i for i in instances if i.get("runtimeStatus") in ("Completed", "Failed", "Terminated")]
        if finished:
            return finished[0]
        time.sleep(0.2)
    raise TimeoutError(f"no {name} orchestration finished within {timeout:.0f}s")


def api_get(stack: LocalStack, path: str) -> Any:
    assert stack.host is not None
    response = requests.get(f"{stack.host.url}/api/{path}",
                            headers={"x-functions-key": stack.host.function_key}, timeout=30)
    response.raise_for_status()
    return response.json()


def count_alert_rows(stack: LocalStack) -> int:
    service = TableServiceClient.from_connection_string(stack.azurite.connection_string)
    prefix = stack.settings.get("TABLES_NAME_PREFIX", "")
    if f"{prefix}Alerts" not in {t.name for t in service.list_tables()}:
        return 0
    table = service.get_table_client(f"{prefix}Alerts")
    rows = table.query_entities("RowKey ge @lo and RowKey lt @hi", parameters={"lo": "alert|", "hi": "alert}"},
                                select=["RowKey"])
    return sum(1 for _ in rows)


def duplicate_emails(messages: list[dict[str, Any]]) -> int:
    """Extra copies of the same message (same Message-ID and recipients) in the inbox."""
    keys = Counter(
        (str(m.get("messageId") or m.get("headers", {}).get("message-id") or m.get("id")),
         tuple(sorted(str(t.get("address")) for t in m.get("to") or [])))
        for m in messages
    )
    return sum(n - 1 for n in keys.values() if n > 1)


def run_cycle(stack: LocalStack) -> dict[str, Any]:
    """Run one full cycle from empty storage and return the summary object."""
    report = CycleReport()
    if stack.maildev is not None:
        report.emails_before = len(stack.maildev.messages())

    # Onboarding, the MSSP's rules, then alerts raised in the customers' tenants after they became active.
    for where, step in (("onboarding", onboard_demo_tenants), ("notification rules", install_demo_rules),
                        ("new alerts", raise_demo_alerts)):
        try:
            step(stack)
        except Exception as exc:  # reported in the summary, never hidden
            report.error(where, f"{type(exc).__name__}: {exc}")

    # Ingestion tick: the timer starts this tick's notification run (docs/NOTIFICATIONS.md, "Run ids").
    started = datetime.now(UTC) - timedelta(seconds=1)
    try:
        fire_timer(stack, "fetch_alerts")
        run = wait_for_orchestration(stack, NOTIFY_ORCHESTRATOR, started)
        report.notes["notification_run"] = {"instanceId": run.get("instanceId"), "status": run.get("runtimeStatus")}
        if run.get("runtimeStatus") != "Completed":
            report.error("notify_mssp", f"run {run.get('instanceId')} ended {run.get('runtimeStatus')}")
    except (RuntimeError, TimeoutError, requests.RequestException) as exc:
        report.error("fetch_alerts", str(exc))

    return summarise(stack, report)


def _table(stack: LocalStack, table: Table) -> TableClient:
    """One of the app's tables in the stack's Azurite, created if the app has not used it yet."""
    service = TableServiceClient.from_connection_string(stack.azurite.connection_string)
    name = stack.settings.get("TABLES_NAME_PREFIX", "") + table.value
    service.create_table_if_not_exists(name)
    return service.get_table_client(name)


def raise_demo_alerts(stack: LocalStack, per_tenant: int = 3) -> None:
    """New alerts in every demo customer's tenant, then the cloud's clock past their ingestion lag."""
    severities = ("High", "Medium", "Low")
    groups = ("Servers", "Finance workstations", "Workstations")
    for customer in CUSTOMERS:
        for index in range(per_tenant):
            stack.cloud.control("POST", f"tenants/{customer.tenant_id}/alerts", json={
                "severity": severities[index % len(severities)].lower(),
                "deviceGroup": groups[index % len(groups)],
            })
    stack.cloud.control("POST", "clock", json={"advance_seconds": DEMO_LAG_SECONDS + 5})


def delivery_counts(table: TableClient) -> dict[str, int]:
    """Rows of the delivery log per state plus the possible duplicates counted, over the whole log."""
    counts: dict[str, int] = {state.value: 0 for state in DeliveryState}
    counts["duplicates"] = 0
    for row in table.query_entities("PartitionKey ne ''", select=["state", "duplicates"]):
        state = str(row.get("state", ""))
        counts[state] = counts.get(state, 0) + 1
        counts["duplicates"] += int(row.get("duplicates") or 0)
    return counts


def delivery_summary(table: TableClient) -> dict[str, int]:
    """What `make run`'s summary reports: possible duplicates counted and permanent delivery failures."""
    counts = delivery_counts(table)
    return {"duplicates": counts["duplicates"], "failures": counts[DeliveryState.FAILED.value]}


def summarise(stack: LocalStack, report: CycleReport) -> dict[str, Any]:
    tenants: Counter[str] = Counter()
    try:
        for tenant in api_get(stack, "tenants")["value"]:
            tenants[str(tenant.get("status"))] += 1
    except requests.RequestException as exc:
        report.error("tenants", str(exc))
    messages = stack.maildev.messages() if stack.maildev is not None else []
    delivery = delivery_summary(_table(stack, Table.DELIVERY_LOG))
    in_inbox = duplicate_emails(messages)
    if in_inbox > delivery["duplicates"]:
        # The product must count every possible duplicate itself; one only the inbox shows is a defect.
        report.error("delivery log", f"{in_inbox} duplicate e-mails in the inbox, {delivery['duplicates']} counted")
    return {
        "tenants": dict(sorted(tenants.items())),
        "alerts_stored": count_alert_rows(stack),
        "emails_delivered": len(messages) - report.emails_before,
        "duplicates": delivery["duplicates"],
        "failures": delivery["failures"],
        "errors": report.errors,
    }
