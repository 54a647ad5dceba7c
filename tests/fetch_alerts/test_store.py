"""The storage writer against Azurite: newer-wins, obligations once, table limits, feed rows, retention."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.data.tables import TableClient, TableServiceClient

from fetch_alerts.keys import format_ticks, from_datetime
from fetch_alerts.normalise import ID_LIMIT, InvalidAlert, normalise
from fetch_alerts.retention import run_retention
from fetch_alerts.store import AlertWriter, Prepared
from local.run.services import Azurite
from shared import payload
from shared.alert_sources import AlertSource
from shared.alerts import MAX_ESCAPED_ID, alert_key, escape_id, obligation_key
from shared.tables import MAX_KEY_CHARS

PORTAL = "https://security.microsoft.com"


@pytest.fixture
def tables(azurite: Azurite) -> dict[str, TableClient]:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    suffix = uuid.uuid4().hex[:8]
    out = {}
    for name in ("Alerts", "AlertFeed", "Tenants"):
        service.create_table(f"{name}{suffix}")
        out[name] = service.get_table_client(f"{name}{suffix}")
    return out


def graph_alert(alert_id: str, updated: datetime, created: datetime | None = None, **fields: Any) -> dict[str, Any]:
    created = created or updated
    return {"id": alert_id, "title": "Suspicious PowerShell", "severity": "medium", "status": "new",
            "createdDateTime": format_ticks(from_datetime(created)),
            "lastUpdateDateTime": format_ticks(from_datetime(updated)), "evidence": [], **fields}


def prepare(tenant: str, raw: dict[str, Any], source: AlertSource = AlertSource.GRAPH) -> Prepared:
    return Prepared(normalise(raw, source, tenant, PORTAL), payload.encode(raw))


def rows(table: TableClient, tenant: str, prefix: str) -> list[dict[str, Any]]:
    return [dict(r) for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": tenant})
            if r["RowKey"].startswith(prefix)]


def writer(table: TableClient, tenant: str, activated: datetime, marker: list[int] | None = None) -> AlertWriter:
    calls = marker if marker is not None else []
    return AlertWriter(table, tenant, from_datetime(activated), lambda: calls.append(1))


NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def test_an_older_version_never_overwrites_a_newer_one(tables: dict[str, TableClient]) -> None:
    tenant = str(uuid.uuid4())
    alerts = tables["Alerts"]
    writer(alerts, tenant, NOW).write([prepare(tenant, graph_alert("a1", NOW, status="resolved"))])
    result = writer(alerts, tenant, NOW).write([prepare(tenant, graph_alert("a1", NOW - timedelta(minutes=5)))])
    assert result.stored == 0
    assert dict(alerts.get_entity(tenant, alert_key("a1")))["status"] == "resolved"


def test_rereading_an_alert_never_duplicates_it_or_its_obligation(tables: dict[str, TableClient]) -> None:
    # The second writer reads first, as ingestion does once the tenant has a cursor.
    tenant = str(uuid.uuid4())
    alerts = tables["Alerts"]
    page = [prepare(tenant, graph_alert(f"a{i}", NOW + timedelta(seconds=i))) for i in range(5)]
    marker: list[int] = []
    first = writer(alerts, tenant, NOW, marker).write(page)
    again = AlertWriter(alerts, tenant, from_datetime(NOW), lambda: marker.append(1), optimistic=False).write(page)
    assert (first.stored, first.new_obligations, again.stored, again.unchanged) == (5, 5, 0, 5)
    assert len(rows(alerts, tenant, "obligation|")) == 5 and len(rows(alerts, tenant, "alert|")) == 5
    assert marker == [1]  # set before the obligations, once


def test_backfill_alerts_get_no_new_obligation(tables: dict[str, TableClient]) -> None:
    tenant = str(uuid.uuid4())
    alerts = tables["Alerts"]
    old = prepare(tenant, graph_alert("old", NOW - timedelta(days=1)))
    new = prepare(tenant, graph_alert("new", NOW + timedelta(minutes=1)))
    result = writer(alerts, tenant, NOW).write([old, new])
    assert result.new_obligations == 1
    assert [r["alertId"] for r in rows(alerts, tenant, "obligation|")] == ["new"]


def test_a_severity_rise_writes_one_obligation_per_level(tables: dict[str, TableClient]) -> None:
    tenant = str(uuid.uuid4())
    alerts = tables["Alerts"]
    w = writer(alerts, tenant, NOW - timedelta(days=1))
    w.write([prepare(tenant, graph_alert("a", NOW, severity="low"))])
    w.write([prepare(tenant, graph_alert("a", NOW + timedelta(minutes=1), severity="high"))])
    w.write([prepare(tenant, graph_alert("a", NOW + timedelta(minutes=2), severity="medium"))])
    w.write([prepare(tenant, graph_alert("a", NOW + timedelta(minutes=3), severity="high"))])
    reasons = sorted(r["reason"] for r in rows(alerts, tenant, "obligation|"))
    assert reasons == ["new", "severity-High"]


def test_a_page_of_many_alerts_goes_in_transactions_of_at_most_100_operations(tables: dict[str, TableClient]) -> None:
    tenant = str(uuid.uuid4())
    alerts = tables["Alerts"]
    page = [prepare(tenant, graph_alert(f"id/{i}#?\\|x", NOW + timedelta(seconds=i))) for i in range(250)]
    result = writer(alerts, tenant, NOW).write(page)
    assert result.stored == 250 and result.new_obligations == 250
    assert result.transactions == len(result.feed_keys) == 6  # 49 alerts + 49 obligations + 1 feed row each
    feed = rows(alerts, tenant, "feed|")
    listed = [e[0] for r in feed for e in json.loads(r["alerts"])]
    assert sorted(listed) == sorted(escape_id(f"id/{i}#?\\|x") for i in range(250))
    assert sorted(r["alertId"] for r in rows(alerts, tenant, "alert|")) == sorted(f"id/{i}#?\\|x" for i in range(250))


# Ids Microsoft might send: it documents `id` as a string, nothing more.
HOSTILE_IDS = ["a/b\\c#d?e|f\x01", "100%25", "100%", "x!21", "x!", "o'brien", "a b+c=d:e", "ünï/😀", "~tilde~",
               "da637551227677560813_-961444813", "L" * 300, "L" * 299 + "M", "/" * 2000]


def test_escaped_ids_hold_no_character_table_storage_forbids_or_double_decodes_and_stay_short() -> None:
    escaped = [escape_id(i) for i in HOSTILE_IDS]
    for alert_id, key in zip(HOSTILE_IDS, escaped, strict=True):
        assert not set(key) & set("/\\#?|%'\x01"), (alert_id, key)
        assert len(key) <= MAX_ESCAPED_ID, (alert_id, len(key))
        assert len(obligation_key(alert_id, "severity-Informational")) <= MAX_KEY_CHARS
    assert len(set(escaped)) == len(HOSTILE_IDS)  # distinct ids, distinct keys
    assert escape_id("da637551227677560813_-961444813") == "da637551227677560813_-961444813"  # Microsoft's form


def test_a_long_ids_key_is_its_start_and_a_hash_that_no_short_ids_key_can_equal() -> None:
    long_key = escape_id("L" * 300)
    assert long_key.startswith("L" * 100) and "!-" in long_key
    # `!` is always escaped, so no id of its own makes `!-`: the two forms never meet.
    assert "!-" not in escape_id("L" * 100 + "!-" + "0" * 64) and escape_id("!-") == "!21-"


def test_an_id_too_long_to_store_is_refused_by_name_and_the_longest_storable_one_is_kept_whole() -> None:
    longest = normalise(graph_alert("é" * ID_LIMIT, NOW), AlertSource.GRAPH, "t", PORTAL)
    # Its link would be 48,000 characters: the tenant's alert queue instead, never a link cut short.
    assert longest.columns["alertId"] == "é" * ID_LIMIT and longest.columns["portalLink"] == f"{PORTAL}/alerts?tid=t"
    odd = normalise(graph_alert("a/b\ud800", NOW), AlertSource.GRAPH, "t", PORTAL)
    assert odd.columns["portalLink"] == f"{PORTAL}/alerts/a%2Fb%ED%A0%80?tid=t"
    with pytest.raises(InvalidAlert, match=f"{ID_LIMIT + 1} characters"):
        normalise(graph_alert("x" * (ID_LIMIT + 1), NOW), AlertSource.GRAPH, "t", PORTAL)


def test_alerts_with_hostile_ids_are_stored_once_under_keys_their_readers_compute(
        tables: dict[str, TableClient]) -> None:
    tenant = str(uuid.uuid4())
    alerts = tables["Alerts"]
    ids = [*HOSTILE_IDS, "lone\ud800surrogate"]  # JSON may escape one; the parser passes it on
    page = [prepare(tenant, graph_alert(i, NOW + timedelta(seconds=n))) for n, i in enumerate(ids)]
    assert writer(alerts, tenant, NOW).write(page).new_obligations == len(ids)
    assert writer(alerts, tenant, NOW).write(page).stored == 0  # read back by key: nothing stored twice
    stored = {r["alertId"]: r["RowKey"] for r in rows(alerts, tenant, "alert|")}
    assert stored == {i: alert_key(i) for i in ids}
    for alert_id in ids:  # a point read, as the notification run and the pull API do
        assert alerts.get_entity(tenant, alert_key(alert_id))["alertId"] == alert_id
    every_key = [r["RowKey"] for r in rows(alerts, tenant, "")]
    assert not [k for k in every_key if "%" in k or len(k) > MAX_KEY_CHARS]


def test_a_huge_payload_is_trimmed_and_marked_but_keeps_the_full_hash() -> None:
    # Random text barely compresses: 2,000 evidence items of it exceed the entity budget even compressed.
    evidence = [{"fileName": base64.b64encode(os.urandom(600)).decode()} for _ in range(2_000)]
    raw = graph_alert("big", NOW, evidence=evidence)
    encoded = payload.encode(raw)
    assert encoded.columns["payloadTrimmed"] is True
    assert encoded.hash == payload.hashlib.sha256(payload.canonical_bytes(raw)).hexdigest()
    chunks = [encoded.columns[f"payload{i}"] for i in range(encoded.columns["payloadParts"])]
    assert all(len(c) <= payload.CHUNK_BYTES for c in chunks) and sum(map(len, chunks)) <= payload.MAX_COMPRESSED_BYTES
    stored = payload.decode_payload(encoded.columns)
    assert 0 < stored["_trimmed"]["evidenceKept"] < 2_000 and stored["id"] == "big"


def test_defender_fields_are_normalised_to_graph_spelling() -> None:
    raw = {"id": "da1", "alertCreationTime": "2026-11-27T08:00:00Z", "lastUpdateTime": "2026-11-27T08:05:00.1234567Z",
           "severity": "High", "status": "InProgress", "classification": "TruePositive", "determination": "Malware",
           "computerDnsName": "pc1.contoso.com", "rbacGroupName": "Servers", "mitreTechniques": ["T1059"],
           "relatedUser": {"userName": "alice", "domainName": "CONTOSO"}, "incidentId": 7}
    columns = normalise(raw, AlertSource.DEFENDER, "t1", PORTAL).columns
    assert (columns["severity"], columns["status"], columns["classification"], columns["determination"]) == (
        "high", "inProgress", "truePositive", "malware")
    assert (columns["deviceName"], columns["deviceGroup"], columns["userName"], columns["incidentId"]) == (
        "pc1.contoso.com", "Servers", "CONTOSO\\alice", "7")
    assert columns["portalLink"] == "https://security.microsoft.com/alerts/da1?tid=t1"
    assert columns["lastUpdateDateTime"] == "2026-11-27T08:05:00.1234567Z"


def test_retention_deletes_alerts_not_updated_for_the_set_days(tables: dict[str, TableClient]) -> None:
    tenant = str(uuid.uuid4())
    alerts = tables["Alerts"]
    tables["Tenants"].create_entity({"PartitionKey": "tenant", "RowKey": tenant, "status": "active"})
    w = writer(alerts, tenant, NOW - timedelta(days=400))
    w.write([prepare(tenant, graph_alert("stale", NOW - timedelta(days=200))),
             prepare(tenant, graph_alert("fresh", NOW - timedelta(days=10)))])
    result = run_retention(alerts, tables["AlertFeed"], tables["Tenants"], 180, now=NOW)
    assert result["failed"] == 0
    left = rows(alerts, tenant, "alert|") + rows(alerts, tenant, "obligation|")
    assert sorted({r["alertId"] for r in left}) == ["fresh"]


def test_a_page_of_alerts_with_the_longest_non_ascii_ids_is_split_to_fit_the_transaction_limit(
        tables: dict[str, TableClient]) -> None:
    # azure-core writes the body as JSON with non-ASCII escaped: each such id is 48 KB there, twice (the alert
    # row and its `new` obligation). 45 of them are 4.3 MB, past the 4 MiB a transaction may hold.
    tenant = str(uuid.uuid4())
    alerts = tables["Alerts"]
    ids = [f"{n:02d}" + "é" * (ID_LIMIT - 2) for n in range(45)]
    page = [prepare(tenant, graph_alert(i, NOW + timedelta(seconds=n))) for n, i in enumerate(ids)]
    result = writer(alerts, tenant, NOW).write(page)
    assert result.stored == result.new_obligations == len(ids) and result.transactions >= 2
    assert sorted(r["alertId"] for r in rows(alerts, tenant, "alert|")) == ids
