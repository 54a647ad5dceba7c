"""The end of every ingestion test: the Alerts table against the local cloud's ground truth.

`assert_table_matches_ground_truth(stack, tenant_id, source)` checks, per alert: stored once, with the
latest visible version (id, last-update time, payload hash of the source's rendering), and exactly one
`new` obligation per alert created at or after the tenant's activation (none for the backfill), and no
`severity-<Level>` obligation for the backfill either. `assert_versions_stored_once(stack, tenant_id)` checks the
tenant's feed rows: every alert version was stored by exactly one transaction (fetch_alerts/STORAGE.md, "Tenant
feed rows"), however many passes read it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fetch_alerts.keys import from_datetime, parse_ticks
from local.run.stack import LocalStack
from shared.alerts import alert_key, escape_id, obligation_key
from tests.fetch_alerts.harness import last_tick_fired, table, tenant_row


@dataclass(frozen=True)
class TruthReport:
    alerts: int
    new_obligations: int
    backfill: int


def ground_truth(stack: LocalStack, tenant_id: str) -> list[dict[str, Any]]:
    return stack.cloud.control("GET", f"tenants/{tenant_id}/alerts").json()["alerts"]


_COLUMNS = ["PartitionKey", "RowKey", "alertId", "lastUpdateDateTime", "payloadHash", "reason", "state", "severity",
            "alerts"]


def stored_rows(stack: LocalStack, tenant_id: str) -> list[dict[str, Any]]:
    rows = table(stack, "Alerts").query_entities("PartitionKey eq @pk", parameters={"pk": tenant_id}, select=_COLUMNS)
    return [dict(r) for r in rows]


def stored_rows_by_tenant(stack: LocalStack) -> dict[str, list[dict[str, Any]]]:
    """Every tenant's rows in the Alerts table, in one scan (for tests that check hundreds of tenants)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for row in table(stack, "Alerts").list_entities(select=_COLUMNS):
        found.setdefault(row["PartitionKey"], []).append(dict(row))
    return found


def assert_table_matches_ground_truth(stack: LocalStack, tenant_id: str, source: str) -> TruthReport:
    """The tenant's rows hold the ground truth read now, except versions the cloud's streams made after the last
    tick was fired (they update alerts in real time: no tick could have read those yet)."""
    return assert_rows_match_truth(ground_truth(stack, tenant_id), stored_rows(stack, tenant_id), source,
                                   tenant_row(stack, tenant_id)["activatedAt"], newer_than=last_tick_fired(stack))


def assert_rows_match_truth(truth: list[dict[str, Any]], rows: list[dict[str, Any]], source: str,
                            activated_at: Any, newer_than: datetime | None = None) -> TruthReport:
    """assert_table_matches_ground_truth on rows already read: the ground truth, the tenant's Alerts rows, and
    its `activatedAt`; with `newer_than`, an alert whose latest version is from that moment on may be stored
    in an earlier version or not yet."""
    alerts = [r for r in rows if r["RowKey"].startswith("alert|")]
    ids = [r["alertId"] for r in alerts]
    assert len(ids) == len(set(ids)), "an alert is stored twice"
    obligations = [r for r in rows if r["RowKey"].startswith("obligation|")]
    misfiled = [r["RowKey"] for r in alerts if r["RowKey"] != alert_key(r["alertId"])]
    misfiled += [r["RowKey"] for r in obligations if r["RowKey"] != obligation_key(r["alertId"], r["reason"])]
    assert not misfiled, f"rows under another key than their alert id's: {misfiled[:5]}"
    hash_field = "graphHash" if source == "graph" else "defenderHash"
    expected = {a["id"]: (parse_ticks(a["lastUpdateDateTime"]), a[hash_field]) for a in truth}
    actual = {r["alertId"]: (parse_ticks(r["lastUpdateDateTime"]), r["payloadHash"]) for r in alerts}
    cut = None if newer_than is None else from_datetime(newer_than)
    late = set() if cut is None else {i for i, (ticks, _) in expected.items()
                                      if ticks >= cut and (i not in actual or actual[i][0] < cut)}
    missing = sorted(set(expected) - set(actual) - late)
    extra = sorted(set(actual) - set(expected))
    stale = sorted(i for i in set(expected) & set(actual) - late if expected[i] != actual[i])
    assert not missing and not extra and not stale, (
        f"table differs from ground truth: {len(missing)} missing {missing[:5]}, {len(extra)} extra {extra[:5]}, "
        f"{len(stale)} not the latest version {[(i, expected[i], actual[i]) for i in stale[:3]]}")
    activated = from_datetime(activated_at)
    after = {a["id"] for a in truth if parse_ticks(a["createdDateTime"]) >= activated} - (late - set(actual))
    news_ids = [r["alertId"] for r in obligations if r["reason"] == "new"]
    assert len(news_ids) == len(set(news_ids)), "an alert has two `new` obligations"
    assert set(news_ids) == after, (
        f"`new` obligations differ: {len(after - set(news_ids))} missing, {len(set(news_ids) - after)} for backfill "
        "or unknown alerts")
    rises = [r["alertId"] for r in obligations if r["reason"].startswith("severity-")]
    assert set(rises) <= after, f"severity-rise obligations for backfill alerts: {sorted(set(rises) - after)[:5]}"
    return TruthReport(alerts=len(expected), new_obligations=len(news_ids), backfill=len(expected) - len(after))


def assert_versions_stored_once(stack: LocalStack, tenant_id: str) -> int:
    """Each (alert, lastUpdateTicks) the tenant's feed rows list is listed once, and the latest version of every
    alert of the ground truth is among them; the number of versions stored."""
    return assert_versions_listed_once(ground_truth(stack, tenant_id), stored_rows(stack, tenant_id))


def assert_versions_listed_once(truth: list[dict[str, Any]], rows: list[dict[str, Any]]) -> int:
    """assert_versions_stored_once on rows already read: the ground truth and the tenant's Alerts rows."""
    feed = [row for row in rows if row["RowKey"].startswith("feed|")]
    versions = Counter((str(alert), int(ticks)) for row in feed for alert, ticks in json.loads(row["alerts"]))
    twice = [version for version, count in versions.items() if count > 1]
    assert not twice, f"alert versions stored more than once: {twice[:5]}"
    latest = {(escape_id(a["id"]), parse_ticks(a["lastUpdateDateTime"])) for a in truth}
    missing = latest - set(versions)
    assert not missing, f"latest versions in no feed row: {sorted(missing)[:5]}"
    return len(versions)
