"""The SIEM pull API over what the real ingestion timer stored: a SIEM that follows the continuation from
the start receives every alert of the local cloud's ground truth in its latest version, including an
alert that became visible only after the SIEM had read past its last-update time."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from fetch_alerts.keys import parse_ticks
from fetch_alerts.normalise import ID_LIMIT
from local.run.stack import LocalStack
from shared.tables import MAX_KEY_CHARS
from tests.fetch_alerts.harness import (
    add_alert,
    add_tenant,
    cloud_now,
    hours_ago,
    iso,
    run_tick,
    start_stack,
    tenant_row,
)
from tests.fetch_alerts.test_store import HOSTILE_IDS
from tests.fetch_alerts.truth import assert_rows_match_truth, ground_truth, stored_rows

SETTLE_SECONDS = 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    service = start_stack(tmp_path_factory.mktemp("pull-ingested"), FETCH_GRAPH_PAGE_SIZE="25",
                          FETCH_DEFENDER_PAGE_SIZE="40", SIEM_FEED_SETTLE_SECONDS=str(SETTLE_SECONDS))
    yield service
    service.stop()


class Siem:
    """A SIEM polling the pull API: keeps the continuation between polls, as a real one would."""

    def __init__(self, stack: LocalStack, page_size: int = 50, **filters: str) -> None:
        self.stack = stack
        self.params: dict[str, Any] = {"pageSize": page_size, **filters}
        self.received: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        """Read until caught up; returns what this poll received."""
        assert self.stack.host is not None
        time.sleep(SETTLE_SECONDS + 0.5)  # rows stored just now become servable after the settle delay
        got: list[dict[str, Any]] = []
        for _ in range(10_000):
            response = requests.get(f"{self.stack.host.url}/api/alerts", params=self.params, timeout=60,
                                    headers={"x-functions-key": self.stack.host.function_key,
                                             "Accept": "application/x-ndjson"})
            assert response.status_code == 200, response.text
            got.extend(json.loads(line) for line in response.text.splitlines())
            self.params = {"continuation": response.headers["X-Continuation-Token"],
                           "pageSize": self.params["pageSize"]}
            if response.headers["X-Has-More"] == "false":
                break
        self.received.extend(got)
        return got


def assert_siem_has_ground_truth(siem: Siem, tenant_id: str, source: str,
                                 truth: list[dict[str, Any]] | None = None) -> None:
    """Every alert of the tenant's ground truth (now, or a snapshot taken before the last tick) reached the
    SIEM at least once, in that version or a newer one (the local cloud's streams keep updating alerts in
    real time, so a version newer than the snapshot may be what was stored)."""
    hash_field = "graphHash" if source == "graph" else "defenderHash"
    received: dict[str, set[tuple[int, str]]] = {}
    for alert in siem.received:
        if alert["tenantId"] == tenant_id:
            received.setdefault(alert["alertId"], set()).add((parse_ticks(alert["lastUpdateDateTime"]),
                                                              alert["payloadHash"]))
    truth = ground_truth(siem.stack, tenant_id) if truth is None else truth
    missing = [a["id"] for a in truth if not any(
        ticks > parse_ticks(a["lastUpdateDateTime"]) or (ticks == parse_ticks(a["lastUpdateDateTime"])
                                                        and digest == a[hash_field])
        for ticks, digest in received.get(a["id"], set()))]
    assert truth and not missing, f"{len(missing)} of {len(truth)} alerts never reached the SIEM: {missing[:5]}"


def test_following_the_token_from_the_start_yields_every_ingested_alert(stack: LocalStack) -> None:
    tenants = {add_tenant(stack, source=source, alerts={"count": 120, "start": hours_ago(stack, 20),
                                                        "alertsPerHour": 30, "lagSeconds": 0}): source
               for source in ("graph", "defender")}
    siem = Siem(stack)
    run_tick(stack)
    siem.poll()
    for tenant_id in tenants:  # new alerts and the stream's updates arrive between polls
        add_alert(stack, tenant_id)
    stack.cloud.control("POST", "clock", json={"advance_seconds": 1800})
    truth = {tenant_id: ground_truth(stack, tenant_id) for tenant_id in tenants}  # before the tick reads it
    run_tick(stack)
    siem.poll()

    for tenant_id, source in tenants.items():
        assert len(truth[tenant_id]) > 120
        assert_siem_has_ground_truth(siem, tenant_id, source, truth[tenant_id])


def test_an_alert_visible_late_reaches_a_siem_that_read_past_its_timestamp(stack: LocalStack) -> None:
    prompt = add_tenant(stack, alerts={"lagSeconds": 0})
    laggy = add_tenant(stack, source="defender", alerts={"lagSeconds": 300})
    late = add_alert(stack, laggy, createdDateTime=iso(cloud_now(stack)), lastUpdateDateTime=iso(cloud_now(stack)))
    time.sleep(0.05)
    fresh = add_alert(stack, prompt)
    siem = Siem(stack)
    run_tick(stack)
    first = siem.poll()
    assert fresh["id"] in {a["alertId"] for a in first}
    assert late["id"] not in {a["alertId"] for a in siem.received}

    stack.cloud.control("POST", "clock", json={"advance_seconds": 360})  # the laggy alert becomes visible
    run_tick(stack)
    second = siem.poll()

    read_past = max(parse_ticks(a["lastUpdateDateTime"]) for a in first)
    arrived = [a for a in second if a["alertId"] == late["id"]]
    assert arrived and parse_ticks(arrived[0]["lastUpdateDateTime"]) < read_past
    assert_siem_has_ground_truth(siem, laggy, "defender")


def test_include_payload_serves_the_raw_alert_as_the_source_served_it(stack: LocalStack) -> None:
    tenant_id = add_tenant(stack, alerts={"lagSeconds": 0})
    add_alert(stack, tenant_id)
    run_tick(stack)
    time.sleep(SETTLE_SECONDS + 0.5)
    assert stack.host is not None

    response = requests.get(f"{stack.host.url}/api/alerts", timeout=60,
                            params={"tenantId": tenant_id, "includePayload": "true"},
                            headers={"x-functions-key": stack.host.function_key})

    [alert] = response.json()["value"]
    canonical = json.dumps(alert["payload"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    truth = ground_truth(stack, tenant_id)[0]["graphHash"]
    assert hashlib.sha256(canonical).hexdigest() == alert["payloadHash"] == truth


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_alerts_with_any_id_microsoft_may_send_reach_the_siem_and_an_unstorable_id_holds_nothing_up(
        stack: LocalStack, source: str) -> None:
    # Microsoft documents an alert's id as a string and nothing more: characters keys forbid, `%` (which Table
    # Storage's point operations decode twice), ids longer than a key. Before, such an id failed its page on
    # every tick or was stored under a key that point reads in Azure cannot find.
    tenant_id = add_tenant(stack, source=source, alerts={"lagSeconds": 0})
    for alert_id in [*HOSTILE_IDS, "z" * ID_LIMIT]:
        add_alert(stack, tenant_id, id=alert_id)
    too_long = add_alert(stack, tenant_id, id="y" * (ID_LIMIT + 1))["id"]
    siem = Siem(stack, tenantId=tenant_id)
    run_tick(stack)
    siem.poll()

    truth = [a for a in ground_truth(stack, tenant_id) if a["id"] != too_long]
    assert len(truth) == len(HOSTILE_IDS) + 1
    rows = stored_rows(stack, tenant_id)
    report = assert_rows_match_truth(truth, rows, source, tenant_row(stack, tenant_id)["activatedAt"])
    assert report.new_obligations == len(truth)
    assert not [r["RowKey"] for r in rows if "%" in r["RowKey"] or len(r["RowKey"]) > MAX_KEY_CHARS]
    assert_siem_has_ground_truth(siem, tenant_id, source, truth)
    assert sorted(a["alertId"] for a in siem.received) == sorted(a["id"] for a in truth)
    health = tenant_row(stack, tenant_id)
    assert health["consecutiveFailures"] == 0 and health["passComplete"] and not health["lastError"]
