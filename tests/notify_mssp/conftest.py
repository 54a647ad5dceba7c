"""Shared fixtures of the notification tests: one local stack per test module (Azurite, the local cloud,
MailDev and the local host running the real app), and a `World` that writes tenants, alerts, obligations
and rules in the layouts ingestion and onboarding write (fetch_alerts/STORAGE.md, grant_access/rules.py),
starts notification runs through the Durable HTTP API and reads what they did.

A module sets its app settings by overriding the module-scoped `notify_settings` fixture. Tests share a
module's stack, so each one creates its own tenants, rules and recipients (rules are scoped to the
test's tenants) and never depends on what another left.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient

from local.run.stack import LocalStack

DURABLE_API = "runtime/webhooks/durabletask"
BASE_SETTINGS = {
    "SEND_RATE_PER_MINUTE": "0",  # off unless a test is about the cap
    "SEND_RATE_PER_DAY": "0",
    "NOTIFY_RETRY_BACKOFF_SECONDS": "1",
    "MAIL_SENDER": "alerts@mssp.example",
}


@pytest.fixture(scope="module")
def notify_settings() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def notify_stack(tmp_path_factory: pytest.TempPathFactory, notify_settings: dict[str, str]) -> Iterator[LocalStack]:
    stack = LocalStack.start(Path(tmp_path_factory.mktemp("notify")), with_maildev=True,
                             extra_settings={**BASE_SETTINGS, **notify_settings})
    yield stack
    stack.stop()


@pytest.fixture
def world(notify_stack: LocalStack) -> World:
    return World(notify_stack)


def _ticks(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 10_000_000)


class World:
    """Seeds the tables and drives notification runs on one local stack."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self._service = TableServiceClient.from_connection_string(stack.azurite.connection_string)

    # --- tables ---------------------------------------------------------------------------------------

    def table(self, name: str) -> TableClient:
        return self._service.create_table_if_not_exists(name)

    def tenant(self, name: str = "Contoso") -> str:
        tenant_id = str(uuid.uuid4())
        self.table("Tenants").upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "status": "active",
                                             "displayName": name, "pendingNotifications": False})
        return tenant_id

    def alert(self, tenant_id: str, *, title: str = "Suspicious PowerShell command line", severity: str = "high",
              device_group: str = "Servers") -> str:
        """An alert row and its `new` obligation, the marker set first (as ingestion does)."""
        from shared.alerts import alert_key, obligation_key

        alert_id = f"da{uuid.uuid4().hex}"
        now = datetime.now(UTC)
        self.table("Tenants").upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id,
                                             "pendingNotifications": True})
        alerts = self.table("Alerts")
        alerts.upsert_entity({
            "PartitionKey": tenant_id, "RowKey": alert_key(alert_id), "alertId": alert_id, "source": "graph",
            "title": title, "category": "Execution", "severity": severity, "maxSeverity": severity,
            "status": "new", "createdDateTime": now.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
            "lastUpdateDateTime": now.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"), "deviceName": "srv-01",
            "deviceGroup": device_group, "userName": "", "mitreTechniques": json.dumps(["T1059.001"]),
            "portalLink": f"https://security.microsoft.com/alerts/{alert_id}?tid={tenant_id}",
            "description": "A PowerShell command line was observed.",
            "lastUpdateTicks": EntityProperty(_ticks(now), EdmType.INT64),
        })
        alerts.upsert_entity({"PartitionKey": tenant_id, "RowKey": obligation_key(alert_id, "new"),
                              "alertId": alert_id, "reason": "new", "severity": severity, "createdAt": now,
                              "state": "pending", "attempts": 0})
        return alert_id

    def rule(self, tenants: list[str], recipients: list[str], **fields: Any) -> str:
        """A rule row in grant_access.rules' layout (PartitionKey `rule`, column `rule` = the JSON)."""
        rule_id = uuid.uuid4().hex
        rule = {"id": rule_id, "name": fields.pop("name", "SOC notifications"), "enabled": True,
                "scope": {"tenants": tenants, "excludeTenants": []},
                "severities": ["Informational", "Low", "Medium", "High"], "deviceGroups": "all",
                "includeOrganizationName": True, "includeTenantLink": True, "includeDeviceInformation": True,
                "recipients": recipients, "mode": "per-alert", "notifyOnSeverityRise": False, **fields}
        self.table("NotificationRules").upsert_entity({"PartitionKey": "rule", "RowKey": rule_id,
                                                       "rule": json.dumps(rule), "name": rule["name"],
                                                       "enabled": rule["enabled"]})
        return rule_id

    def obligations(self, tenant_id: str) -> list[dict[str, Any]]:
        rows = self.table("Alerts").query_entities(
            "PartitionKey eq @t and RowKey ge @lo and RowKey lt @hi",
            parameters={"t": tenant_id, "lo": "obligation|", "hi": "obligation}"})
        return [dict(row) for row in rows]

    def marker(self, tenant_id: str) -> bool:
        return bool(self.table("Tenants").get_entity("tenant", tenant_id).get("pendingNotifications"))

    def deliveries(self, partition: str) -> list[dict[str, Any]]:
        rows = self.table("DeliveryLog").query_entities("PartitionKey eq @p", parameters={"p": partition})
        return [dict(row) for row in rows]

    # --- mail -------------------------------------------------------------------------------------------

    @staticmethod
    def recipient() -> str:
        return f"soc-{uuid.uuid4().hex[:12]}@mssp.example"

    def emails_to(self, address: str) -> list[dict[str, Any]]:
        assert self.stack.maildev is not None
        return [m for m in self.stack.maildev.messages()
                if any(str(t.get("address", "")).lower() == address.lower() for t in m.get("to") or [])]

    # --- runs -------------------------------------------------------------------------------------------

    @property
    def host(self) -> Any:
        assert self.stack.host is not None
        return self.stack.host

    def start_run(self, run_id: str | None = None) -> str:
        run_id = run_id or f"notify-test-{uuid.uuid4().hex[:12]}"
        # The body is the input's JSON text as a JSON string, as the SDK's client posts it.
        response = requests.post(f"{self.host.url}/{DURABLE_API}/orchestrators/notify_mssp/{run_id}",
                                 params={"code": self.host.master_key}, json=json.dumps(run_id), timeout=30)
        assert response.status_code == 202, response.text
        return run_id

    def status(self, instance_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.host.url}/{DURABLE_API}/instances/{instance_id}",
                                params={"code": self.host.master_key}, timeout=30)
        return dict(response.json())

    def wait_run(self, run_id: str, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.get("runtimeStatus") in ("Completed", "Failed", "Terminated"):
                assert status["runtimeStatus"] == "Completed", status.get("output")
                return dict(status["output"])
            time.sleep(0.2)
        raise TimeoutError(f"notification run {run_id} did not finish within {timeout:.0f}s")

    def run(self, run_id: str | None = None, timeout: float = 90.0) -> dict[str, Any]:
        return self.wait_run(self.start_run(run_id), timeout)

    def replays(self, instance_id: str) -> int:
        return int(self.host.admin("GET", f"local/durable/instances/{instance_id}").json()["replays"])

    def faults(self, plan: dict[str, Any]) -> None:
        response = self.host.admin("POST", "local/faults", json=plan)
        assert response.status_code in (200, 204), response.text


class SmtpRelay:
    """A small SMTP server in front of MailDev that a test can take down or make reject recipients.

    It speaks just enough SMTP for smtplib (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and forwards
    each accepted message to MailDev. `down = True` closes every new connection at once (the server
    unreachable: a transient failure); an address in `rejected` gets `550 5.1.1` at RCPT (permanent).
    """

    def __init__(self, upstream_port: int = 0) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.down = False
        self.rejected: set[str] = set()
        self.refused_connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._stopping = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import threading

        while not self._stopping:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            if self.down:
                self.refused_connections += 1
                connection.close()
                continue
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: Any) -> None:
        import smtplib

        stream = connection.makefile("rwb")

        def reply(line: str) -> None:
            stream.write(line.encode() + b"\r\n")
            stream.flush()

        sender, recipients = "", []
        try:
            reply("220 relay ESMTP")
            for raw in stream:
                command = raw.decode(errors="replace").rstrip("\r\n")
                verb = command[:4].upper()
                if verb in ("EHLO", "HELO"):
                    reply("250 relay")
                elif verb == "MAIL":
                    sender, recipients = command.split(":", 1)[1].strip().strip("<>"), []
                    reply("250 2.1.0 OK")
                elif verb == "RCPT":
                    address = command.split(":", 1)[1].strip().strip("<>")
                    if address.lower() in self.rejected:
                        reply("550 5.1.1 recipient rejected")
                    else:
                        recipients.append(address)
                        reply("250 2.1.5 OK")
                elif verb == "DATA":
                    reply("354 end with <CRLF>.<CRLF>")
                    lines = []
                    for data in stream:
                        if data in (b".\r\n", b".\n"):
                            break
                        lines.append(data[1:] if data.startswith(b"..") else data)
                    with smtplib.SMTP("127.0.0.1", self.upstream_port, timeout=10) as upstream:
                        upstream.sendmail(sender, recipients, b"".join(lines))
                    reply("250 2.0.0 queued")
                elif verb == "QUIT":
                    reply("221 bye")
                    return
                else:  # RSET, NOOP
                    reply("250 OK")
        except OSError:
            return
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopping = True
        self._server.close()
