"""Benchmark scenario `emails_2000`: 2,000 new alerts across 100 tenants, one per-alert rule,
SMTP to MailDev with the send rate cap off.

Measured: the wall time from starting the notification run until it has completed with every e-mail in
MailDev, the orchestrator replays (the run's own and those of all instances, sub-orchestrations
included, from the local host's Durable diagnostics), and the delivery log proving each (alert, rule,
recipient) was sent exactly once (one `sent` row per expected key, no possible duplicate counted, and one
copy of each Message-ID in MailDev).

Bound, measured in the same run: the same 2,000 e-mails (rendered by the same code) sent straight to
MailDev over SMTP by the same transport, with as many threads as the host runs activities at once
(host.json maxConcurrentActivityFunctions). Target: within 3x of the bound and under 60 s.

The app runs with PYTHON_THREADPOOL_THREAD_COUNT=20 (the Python worker's setting, also valid in Azure):
with the default (CPUs + 4, so 6 here) only 6 activities run at once however many host.json allows, and
orchestrator episodes queue behind them, so the bound's concurrency would not be the app's.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient

from local.run.services import REPO_ROOT
from local.run.stack import LocalStack

logger = logging.getLogger(__name__)

TENANTS = 100
ALERTS_PER_TENANT = 20
RECIPIENT = "soc@mssp.example"
TARGET_FACTOR = 3.0
TARGET_S = 60.0
TIMEOUT_S = 300.0
DURABLE_API = "runtime/webhooks/durabletask"
SETTINGS = {"SEND_RATE_PER_MINUTE": "0", "SEND_RATE_PER_DAY": "0", "MAIL_SENDER": "alerts@mssp.example",
            "PYTHON_THREADPOOL_THREAD_COUNT": "20"}


def run_emails_2000(workdir: Path) -> dict[str, Any]:
    stack = LocalStack.start(workdir, with_maildev=True, extra_settings=SETTINGS)
    try:
        return _measure(stack)
    finally:
        stack.stop()


def _measure(stack: LocalStack) -> dict[str, Any]:
    assert stack.host is not None and stack.maildev is not None  # noqa: S101 - started with both
    service = TableServiceClient.from_connection_string(stack.azurite.connection_string)
    tables = {name: service.create_table_if_not_exists(name)
              for name in ("Tenants", "Alerts", "NotificationRules", "DeliveryLog")}
    rule = _store_rule(tables["NotificationRules"])
    # Warm-up: the first run imports and builds clients lazily; neither figure should pay for that.
    _seed(tables, 1, 1, "Warm-up")
    _run(stack, f"notify-bench-warmup-{uuid.uuid4().hex[:8]}")
    expected = _seed(tables, TENANTS, ALERTS_PER_TENANT, "Customer")
    bound = _bound(stack, tables, rule, expected)
    stack.maildev.clear()

    replays_before = _total_replays(stack)
    run_id = f"notify-bench-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    _, summary = _run(stack, run_id)
    # SMTP accepted each e-mail before the run completed, so MailDev normally holds them all already.
    messages = _wait_for_mail(stack, len(expected), deadline=time.monotonic() + 30)
    wall_s = time.perf_counter() - started
    run_replays = int(stack.host.admin("GET", f"local/durable/instances/{run_id}").json()["replays"])
    all_replays = _total_replays(stack) - replays_before

    proof = _exactly_once(tables["DeliveryLog"], expected, rule, messages)
    met = proof["exactly_once"] and wall_s <= TARGET_FACTOR * bound and wall_s < TARGET_S
    return {
        "emails": len(expected),
        "tenants": TENANTS,
        "wall_s": round(wall_s, 3),
        "emails_per_s": round(len(expected) / wall_s, 1) if wall_s else None,
        "replays_run": run_replays,
        "replays_all_instances": all_replays,
        "sent": summary.get("sent"),
        "carried_over": summary.get("carriedOver"),
        **proof,
        "bound": round(bound, 3),
        "target": f"wall_s <= {TARGET_FACTOR:g} x bound and wall_s < {TARGET_S:g}",
        "met": met,
    }


def _store_rule(table: TableClient) -> dict[str, Any]:
    rule = {"id": uuid.uuid4().hex, "name": "Every new alert", "enabled": True,
            "scope": {"tenants": "all", "excludeTenants": []}, "severities": ["Informational", "Low", "Medium", "High"],
            "deviceGroups": "all", "includeOrganizationName": True, "includeTenantLink": True,
            "includeDeviceInformation": True, "recipients": [RECIPIENT], "mode": "per-alert",
            "notifyOnSeverityRise": False}
    table.upsert_entity({"PartitionKey": "rule", "RowKey": rule["id"], "rule": json.dumps(rule),
                         "name": rule["name"], "enabled": True})
    return rule


def _seed(tables: dict[str, TableClient], tenants: int, per_tenant: int, name: str) -> list[tuple[str, str]]:
    """Tenants with new alerts and their pending obligations, written as ingestion writes them."""
    from shared.alerts import alert_key, obligation_key

    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    ticks = int((now - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 10_000_000)
    expected = []
    for number in range(tenants):
        tenant_id = str(uuid.uuid4())
        tables["Tenants"].upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "status": "active",
                                         "displayName": f"{name} {number + 1}", "pendingNotifications": True})
        operations = []
        for index in range(per_tenant):
            alert_id = f"da{uuid.uuid4().hex}"
            expected.append((tenant_id, alert_id))
            severity = ("high", "medium", "low", "informational")[index % 4]
            operations.append(("upsert", {
                "PartitionKey": tenant_id, "RowKey": alert_key(alert_id), "alertId": alert_id, "source": "graph",
                "title": f"Suspicious activity {index + 1}", "category": "Execution", "severity": severity,
                "maxSeverity": severity, "status": "new", "createdDateTime": stamp, "lastUpdateDateTime": stamp,
                "lastUpdateTicks": EntityProperty(ticks, EdmType.INT64), "deviceName": f"host-{index}",
                "deviceGroup": "Servers", "userName": "", "mitreTechniques": json.dumps(["T1059"]),
                "portalLink": f"https://security.microsoft.com/alerts/{alert_id}?tid={tenant_id}",
                "description": "Benchmark alert."}))
            operations.append(("upsert", {
                "PartitionKey": tenant_id, "RowKey": obligation_key(alert_id, "new"), "alertId": alert_id,
                "reason": "new", "severity": severity, "createdAt": now, "state": "pending", "attempts": 0}))
        for start in range(0, len(operations), 100):
            tables["Alerts"].submit_transaction(operations[start:start + 100])
    return expected


def _bound(stack: LocalStack, tables: dict[str, TableClient], rule_json: dict[str, Any],
           expected: list[tuple[str, str]]) -> float:
    """Seconds to send the same e-mails straight to MailDev over SMTP at the host's activity concurrency."""
    from notify_mssp.delivery import alert_delivery_key
    from notify_mssp.email import Sender, render_alert_email
    from notify_mssp.rules import Rule
    from notify_mssp.transports import SmtpTransport
    from shared.alerts import alert_key

    assert stack.maildev is not None  # noqa: S101 - started with MailDev
    rule = Rule.from_json(rule_json)
    sender = Sender("alerts@mssp.example", "MSSP alert notifications", "https://security.microsoft.com")
    tenant_rows: dict[str, dict[str, Any]] = {}
    messages = []
    for tenant_id, alert_id in expected:
        if tenant_id not in tenant_rows:
            tenant_rows[tenant_id] = dict(tables["Tenants"].get_entity("tenant", tenant_id))
        alert = dict(tables["Alerts"].get_entity(tenant_id, alert_key(alert_id)))
        token = alert_delivery_key(tenant_id, alert_id, "new", rule.id, RECIPIENT).message_token
        messages.append(render_alert_email(alert, tenant_rows[tenant_id], rule, RECIPIENT, message_id=token,
                                           sender=sender))
    transport = SmtpTransport("127.0.0.1", stack.maildev.smtp_port, starttls=False, username="", password="",
                              timeout=30)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=_activity_concurrency()) as pool:
        outcomes = list(pool.map(transport.send, messages))
    elapsed = time.perf_counter() - started
    failed = [o for o in outcomes if o.status != "sent"]
    if failed:
        raise RuntimeError(f"bound: {len(failed)} direct sends failed, e.g. {failed[0].detail}")
    return elapsed


def _activity_concurrency() -> int:
    host_json = json.loads((REPO_ROOT / "host.json").read_text())
    return int(host_json["extensions"]["durableTask"].get("maxConcurrentActivityFunctions", 10))


def _run(stack: LocalStack, run_id: str) -> tuple[float, dict[str, Any]]:
    assert stack.host is not None  # noqa: S101 - started with the app
    started = time.perf_counter()
    # The body is the JSON text of the input (a JSON string holding JSON), as the SDK's client posts it.
    response = requests.post(f"{stack.host.url}/{DURABLE_API}/orchestrators/notify_mssp/{run_id}",
                             params={"code": stack.host.master_key}, json=json.dumps(run_id), timeout=30)
    response.raise_for_status()
    deadline = started + TIMEOUT_S
    while time.perf_counter() < deadline:
        status = requests.get(f"{stack.host.url}/{DURABLE_API}/instances/{run_id}",
                              params={"code": stack.host.master_key}, timeout=30).json()
        if status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
            if status["runtimeStatus"] != "Completed":
                raise RuntimeError(f"run {run_id} ended {status['runtimeStatus']}: {status.get('output')}")
            return time.perf_counter() - started, dict(status["output"])
        time.sleep(0.05)
    raise TimeoutError(f"run {run_id} did not finish within {TIMEOUT_S:.0f}s")


def _wait_for_mail(stack: LocalStack, count: int, deadline: float) -> list[dict[str, Any]]:
    assert stack.maildev is not None  # noqa: S101 - started with MailDev
    while True:
        messages = stack.maildev.messages()
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.5)


def _total_replays(stack: LocalStack) -> int:
    assert stack.host is not None  # noqa: S101 - started with the app
    stats = stack.host.admin("GET", "local/stats").json()
    durable = stats.get("durable") or {}
    return int(durable.get("replays", 0))


def _exactly_once(log: TableClient, expected: list[tuple[str, str]], rule: dict[str, Any],
                  messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Each expected (alert, rule, recipient) has one `sent` row and one copy in MailDev; none counted twice."""
    from notify_mssp.delivery import alert_delivery_key

    tenants = {tenant for tenant, _ in expected}
    rows = {}
    for tenant in tenants:
        for row in log.query_entities("PartitionKey eq @p", parameters={"p": tenant}):
            rows[(row["PartitionKey"], row["RowKey"])] = row
    keys = [alert_delivery_key(t, a, "new", rule["id"], RECIPIENT) for t, a in expected]
    sent = sum(1 for k in keys if rows.get((k.partition, k.row), {}).get("state") == "sent")
    duplicates = sum(int(row.get("duplicates") or 0) for row in rows.values())
    copies = Counter(str(m.get("messageId") or (m.get("headers") or {}).get("message-id")) for m in messages)
    wanted = {f"<{k.message_token}@mssp.example>" for k in keys}
    in_mail = sum(1 for mid in wanted if copies.get(mid) == 1)
    extra_copies = sum(n - 1 for n in copies.values() if n > 1)
    return {
        "delivery_rows": len(rows),
        "delivery_sent": sent,
        "duplicates_counted": duplicates,
        "mail_received": len(messages),
        "mail_once_each": in_mail,
        "mail_extra_copies": extra_copies,
        "exactly_once": len(rows) == len(keys) == sent == in_mail and duplicates == 0 and extra_copies == 0,
    }
