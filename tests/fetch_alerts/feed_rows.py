"""Rows in the layout of fetch_alerts/STORAGE.md, written straight to Azurite, for the SIEM pull API tests.

The pull API is specified against stored rows, so most of its tests seed the rows ingestion would write
(alert rows, tenant feed rows in the same transaction, global AlertFeed rows, tenant rows) instead of
running ingestion for 100,000 alerts. Large seeds go through the Table service's `$batch` endpoint with
a SharedKeyLite signature built here: the Python SDK spends ~0.5 ms of CPU per entity, which would make a
100,000-alert tenant take minutes on a 2-core machine; the wire format is the same one the SDK sends.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
from azure.data.tables import TableServiceClient

from fetch_alerts.feed import minute_bucket
from fetch_alerts.keys import format_ticks
from shared.alerts import escape_id, feed_key

SEVERITIES = ("informational", "low", "medium", "high")
STATUSES = ("new", "inProgress", "resolved")


@dataclass
class SeedAlert:
    """One alert version to store; ticks are 100 ns since the epoch."""

    tenant_id: str
    alert_id: str
    severity: str = "medium"
    status: str = "new"
    last_update_ticks: int = 0
    title: str = "Suspicious activity"

    def row(self, feed_row_key: str) -> dict[str, Any]:
        ticks = self.last_update_ticks
        return {
            "PartitionKey": self.tenant_id, "RowKey": f"alert|{escape_id(self.alert_id)}",
            "alertId": self.alert_id, "source": "graph", "title": self.title, "category": "Execution",
            "severity": self.severity, "maxSeverity": self.severity, "status": self.status,
            "classification": "", "determination": "",
            "createdDateTime": format_ticks(ticks), "lastUpdateDateTime": format_ticks(ticks),
            "lastUpdateTicks": str(ticks), "lastUpdateTicks@odata.type": "Edm.Int64",
            "deviceName": "host-1", "userName": "", "deviceGroup": "", "mitreTechniques": '["T1059"]',
            "incidentId": "", "detectionSource": "antivirus", "serviceSource": "microsoftDefenderForEndpoint",
            "portalLink": f"https://security.microsoft.com/alerts/{self.alert_id}?tid={self.tenant_id}",
            "payloadHash": hashlib.sha256(f"{self.alert_id}|{ticks}".encode()).hexdigest(),
            "payloadEncoding": "zlib+json", "payloadParts": 0, "payloadBytes": 0, "payloadTrimmed": False,
            "feedKey": feed_row_key,
        }


@dataclass
class FeedSeeder:
    """Writes alert versions the way ingestion stores them: per transaction, the alert rows plus one tenant
    feed row listing them; then one AlertFeed row per tenant feed row."""

    connection_string: str
    table_url: str
    prefix: str = ""
    writer: str = field(default_factory=lambda: secrets.token_hex(4))
    _session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        parts = dict(kv.split("=", 1) for kv in self.connection_string.split(";") if "=" in kv)
        self._account = parts["AccountName"]
        self._key = base64.b64decode(parts["AccountKey"])
        self._base = self.table_url.rstrip("/")
        service = TableServiceClient.from_connection_string(self.connection_string)
        for name in ("Alerts", "AlertFeed", "Tenants"):
            service.create_table_if_not_exists(self.prefix + name)

    # -- raw $batch ------------------------------------------------------------------------------------

    def _batch(self, table: str, rows: list[dict[str, Any]]) -> None:
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        parts = []
        for row in rows:
            url = (f"{self._base}/{table}(PartitionKey='{quote(row['PartitionKey'], safe='')}',"
                   f"RowKey='{quote(row['RowKey'].replace(chr(39), chr(39) * 2), safe='')}')")
            parts.append(f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary"
                         f"\r\n\r\nPUT {url} HTTP/1.1\r\nContent-Type: application/json\r\n"
                         f"Accept: application/json;odata=minimalmetadata\r\nDataServiceVersion: 3.0;\r\n\r\n"
                         f"{json.dumps(row)}\r\n")
        body = (f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
                + "".join(parts) + f"--{changeset}--\r\n--{batch}--\r\n")
        date = email.utils.formatdate(usegmt=True)
        to_sign = f"{date}\n/{self._account}/{self._account}/$batch"
        signature = base64.b64encode(hmac.new(self._key, to_sign.encode(), hashlib.sha256).digest()).decode()
        response = self._session.post(f"{self._base}/$batch", data=body.encode(), timeout=120, headers={
            "Content-Type": f"multipart/mixed; boundary={batch}", "x-ms-version": "2019-02-02",
            "x-ms-date": date, "Authorization": f"SharedKeyLite {self._account}:{signature}",
            "DataServiceVersion": "3.0", "Accept": "application/json;odata=minimalmetadata"})
        if response.status_code != 202 or "HTTP/1.1 2" not in response.text or "HTTP/1.1 4" in response.text:
            raise RuntimeError(f"seed batch failed: {response.status_code} {response.text[:300]}")

    # -- what ingestion writes ---------------------------------------------------------------------------

    def tenant(self, tenant_id: str, display_name: str) -> None:
        self._batch(self.prefix + "Tenants", [{"PartitionKey": "tenant", "RowKey": tenant_id,
                                               "displayName": display_name, "status": "active"}])

    def store(self, alerts: list[SeedAlert], stored_ns: int, *, publish: bool = True) -> str:
        """One transaction of at most 99 versions of one tenant plus its feed row; returns the feed key."""
        assert 0 < len(alerts) <= 99 and len({a.tenant_id for a in alerts}) == 1
        tenant_id = alerts[0].tenant_id
        key = feed_key(stored_ns, self.writer)
        feed = {"PartitionKey": tenant_id, "RowKey": key, "count": len(alerts),
                "alerts": json.dumps([[escape_id(a.alert_id), a.last_update_ticks] for a in alerts])}
        self._batch(self.prefix + "Alerts", [a.row(key) for a in alerts] + [feed])
        if publish:
            self.publish(tenant_id, key, len(alerts), stored_ns)
        return key

    def publish(self, tenant_id: str, tenant_feed_key: str, count: int, published_ns: int) -> None:
        self._batch(self.prefix + "AlertFeed", [{
            "PartitionKey": minute_bucket(published_ns), "RowKey": f"{published_ns:020d}|{tenant_id}|{tenant_feed_key}",
            "tenantId": tenant_id, "feedKey": tenant_feed_key, "count": count}])

    def store_many(self, batches: Iterable[tuple[list[SeedAlert], int]], threads: int = 4) -> None:
        """Many transactions in parallel (different stored_ns each), published to the global feed too."""
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda item: self.store(item[0], item[1]), batches))
