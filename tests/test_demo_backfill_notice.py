"""The onboarding backfill notice (notify_mssp/ops_notices.py): a tenant that had nothing to backfill gets no
"onboarding backfill of 0 alerts" e-mail, only a record (so the count is taken once); one with a backfill
still gets its notice, once. Real tables in Azurite, a transport that records what it is given."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from azure.data.tables import TableServiceClient

from notify_mssp.ops_notices import NoticeContext, Thresholds, _check_tenant, is_recorded


class RecordingTransport:
    def __init__(self) -> None:
        self.subjects: list[str] = []

    def send(self, message: Any) -> SimpleNamespace:
        self.subjects.append(message.subject)
        return SimpleNamespace(status="sent", detail="")


def test_nothing_to_backfill_is_recorded_without_a_notice_and_a_backfill_is_noticed_once(azurite):
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    suffix = uuid.uuid4().hex[:8]
    incidents = service.create_table(f"DemoIncidents{suffix}")
    alerts = service.create_table(f"DemoAlerts{suffix}")
    transport = RecordingTransport()
    ctx = NoticeContext(incidents=incidents, recipients=("ops@mssp.example",), transport=lambda: transport)
    now = datetime.now(UTC)
    activated = now - timedelta(hours=1)
    empty, full = str(uuid.uuid4()), str(uuid.uuid4())
    alerts.create_entity({"PartitionKey": full, "RowKey": "alert|a1", "alertId": "a1",
                          "createdDateTime": (activated - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")})
    limits = Thresholds(failing_runs=3, silent_hours=48, expiry_warning_days=30)
    rows = [{"PartitionKey": "tenant", "RowKey": tenant_id, "displayName": name, "status": "active",
             "statusChangedAt": activated, "activatedAt": activated, "passComplete": True}
            for tenant_id, name in ((empty, "Empty Ltd"), (full, "Full Ltd"))]
    for _ in range(2):
        for row in rows:
            _check_tenant(ctx, dict(row), alerts, limits, now)
    assert transport.subjects == [f"Full Ltd ({full}): onboarding backfill of 1 alerts"]
    assert is_recorded(ctx, "backfill", empty)
    assert incidents.get_entity("notice", f"backfill|{empty}")["notice"] == "none"
