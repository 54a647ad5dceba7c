"""Alerts stored by ingestion's own writer, for the SIEM pull API tests.

`WriterSeeder.store` hands Graph alert objects to `fetch_alerts.store.AlertWriter` (normalised and encoded
as ingestion does), publishes the tenant feed rows it wrote with `fetch_alerts.feed.publish` and records the
last one in the tenant row's `feedPublished`, as ingestion does, so every row the API reads has the layout
the real writer gives it (a change of that layout reaches these tests) and a tick that did ingest a seeded
tenant would find nothing left to publish again.

`WriterSeeder.store_bulk` is for volume (a tenant with 100,000 alerts): the writer builds its transactions
as usual, but they are sent as raw `$batch` requests, serialised by the Table SDK's own entity serialiser;
only the transport differs (the SDK spends ~0.5 ms of CPU per entity, minutes for 100,000 on 2 cores).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.data.tables import TableServiceClient
from azure.data.tables._serialize import _add_entity_properties

from fetch_alerts import feed
from fetch_alerts.cursor import TenantRow
from fetch_alerts.normalise import normalise
from fetch_alerts.store import AlertWriter, Prepared, WriteResult
from local.run.stack import LocalStack
from shared import payload
from shared.alert_sources import AlertSource
from shared.settings import Settings
from tests.fetch_alerts.feed_rows import FeedSeeder

# Created before the tenant became active: backfill, so the writer adds no obligation rows (the pull API
# does not read them) and a transaction holds 99 versions, as ingestion's backfill does.
NEVER_ACTIVE = 2**62


def graph_time(ticks: int) -> str:
    """100 ns ticks since the epoch as Graph writes a time: ISO 8601 UTC with 7 fraction digits."""
    seconds, rest = divmod(ticks, 10_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{rest:07d}Z"


@dataclass
class SourceAlert:
    """One version of an alert as the Graph alerts API serves it; ticks are 100 ns since the epoch."""

    tenant_id: str
    alert_id: str
    severity: str = "medium"
    status: str = "new"
    last_update_ticks: int = 0
    title: str = "Suspicious activity"

    def raw(self) -> dict[str, Any]:
        when = graph_time(self.last_update_ticks)
        return {"id": self.alert_id, "tenantId": self.tenant_id, "title": self.title, "category": "Execution",
                "severity": self.severity, "status": self.status, "classification": None, "determination": None,
                "createdDateTime": when, "lastUpdateDateTime": when, "serviceSource": "microsoftDefenderForEndpoint",
                "detectionSource": "antivirus", "mitreTechniques": ["T1059"], "incidentId": None,
                "evidence": [{"@odata.type": "#microsoft.graph.security.deviceEvidence",
                              "deviceDnsName": "host-1"}]}


class WriterSeeder:
    def __init__(self, stack: LocalStack, settle_seconds: float) -> None:
        self.stack = stack
        self.settle_ns = int(settle_seconds * 1_000_000_000)
        prefix = stack.settings.get("TABLES_NAME_PREFIX", "")
        service = TableServiceClient.from_connection_string(stack.azurite.connection_string)
        for name in ("Alerts", "AlertFeed", "Tenants"):
            service.create_table_if_not_exists(prefix + name)
        self.alerts = service.get_table_client(prefix + "Alerts")
        self.feed = service.get_table_client(prefix + "AlertFeed")
        self.tenants = service.get_table_client(prefix + "Tenants")
        self.portal = str(Settings(dict(stack.settings)).get("PORTAL_HOST"))
        self._raw = FeedSeeder(stack.azurite.connection_string, stack.azurite.table_url, prefix=prefix)
        self._written_ns = 0
        self._tenants: set[str] = set()  # the tenant rows this seeder wrote

    def tenant(self, display_name: str = "Contoso Ltd", tenant_id: str | None = None) -> str:
        """An active tenant row (the columns onboarding writes that the pull API reads)."""
        tenant_id = tenant_id or str(uuid.uuid4())
        self.tenants.upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "status": "active",
                                    "displayName": display_name, "alertSource": "graph"})
        self._tenants.add(tenant_id)
        return tenant_id

    def _published(self, tenant_id: str, feed_keys: list[str]) -> None:
        """The global rows of `feed_keys` written, then recorded in the tenant row by ingestion's own merge.
        Without the record, ingestion would publish the tenant's feed rows again on its next tick (the outbox,
        fetch_alerts/feed.py), and the feed would rightly name each version twice. A tenant without a row
        (one the seeder never created) is never ingested, and has nothing to record."""
        feed.publish(self.feed, tenant_id, feed_keys)
        if feed_keys and tenant_id in self._tenants:
            TenantRow(self.tenants, tenant_id, None).merge({"feedPublished": feed_keys[-1]})
        self._written_ns = max(self._written_ns, time.time_ns())

    def _prepared(self, alerts: Sequence[SourceAlert]) -> list[Prepared]:
        return [Prepared(normalise(raw, AlertSource.GRAPH, a.tenant_id, self.portal), payload.encode(raw))
                for a in alerts for raw in [a.raw()]]

    def store(self, alerts: Sequence[SourceAlert]) -> WriteResult:
        """One page of one tenant's alerts through the writer, then its feed rows published, as a tick does."""
        tenant_id = alerts[0].tenant_id
        assert all(a.tenant_id == tenant_id for a in alerts)
        writer = AlertWriter(self.alerts, tenant_id, NEVER_ACTIVE, lambda: None, in_flight=1)
        result = writer.write(self._prepared(alerts))
        self._published(tenant_id, result.feed_keys)
        return result

    def store_many(self, pages: Iterable[Sequence[SourceAlert]], threads: int = 4) -> None:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(self.store, pages))

    def store_bulk(self, alerts: Sequence[SourceAlert], threads: int = 4) -> int:
        """Many alerts of one tenant: the writer's transactions over raw `$batch`; returns how many."""
        tenant_id = alerts[0].tenant_id
        recorder = _Recorder()
        writer = AlertWriter(recorder, tenant_id, NEVER_ACTIVE, lambda: None, in_flight=1)  # type: ignore[arg-type]
        result = writer.write(self._prepared(alerts))
        table = self.alerts.table_name

        def send(operations: list[tuple[Any, ...]]) -> None:
            assert all(op[0] == "create" for op in operations)
            self._raw._batch(table, [_add_entity_properties(op[1]) for op in operations])

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(send, recorder.transactions))
        self._published(tenant_id, result.feed_keys)
        return len(recorder.transactions)

    def settle(self) -> None:
        """Wait until everything stored so far is past the API's settle delay (its stored times are at most
        the time recorded after the last write)."""
        while time.time_ns() <= self._written_ns + self.settle_ns:
            time.sleep(0.05)


class _Recorder:
    """Stands in for the Alerts TableClient: keeps the writer's transactions instead of submitting them."""

    def __init__(self) -> None:
        self.transactions: list[list[tuple[Any, ...]]] = []

    def submit_transaction(self, operations: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
        self.transactions.append(list(operations))
        return []
