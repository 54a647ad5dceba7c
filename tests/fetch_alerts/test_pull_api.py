"""The SIEM pull API, `GET /api/alerts`, over real HTTP on the local host with rows in Azurite.

Rows are stored by ingestion's own writer (fetch_alerts.store.AlertWriter, then fetch_alerts.feed.publish;
tests/fetch_alerts/writer_seed.py), so each behaviour of the API is pinned down on its own over exactly the
rows ingestion writes; test_pull_api_ingested.py reads what the real timer ingested from the local cloud.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from fetch_alerts import feed
from fetch_alerts import store as store_module
from fetch_alerts.feed_reader import max_rows_read
from fetch_alerts.keys import TICKS_PER_SECOND
from local.run.stack import NEVER, LocalStack
from shared.tenants import Tenant
from tests.fetch_alerts.writer_seed import SourceAlert, WriterSeeder

SECOND_NS = 1_000_000_000
SETTLE_SECONDS = 1
READ_AHEAD = 100  # a feed query reads at most one page of this many rows beyond what the page uses


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # No tick: the rows are the seeder's, and a tick would ingest its tenants from the local cloud, which
    # knows none of them.
    started = LocalStack.start(tmp_path_factory.mktemp("pull-api"), with_maildev=False, schedule=NEVER,
                               extra_settings={"SIEM_FEED_SETTLE_SECONDS": str(SETTLE_SECONDS)})
    yield started
    started.stop()


@pytest.fixture(scope="module")
def seeder(stack: LocalStack) -> WriterSeeder:
    return WriterSeeder(stack, SETTLE_SECONDS)


def new_tenant(seeder: WriterSeeder, name: str = "Contoso Ltd") -> str:
    return seeder.tenant(name)


def pull(stack: LocalStack, *, accept: str | None = None, key: str | None = "function",
         **params: Any) -> requests.Response:
    assert stack.host is not None
    headers = {"Accept": accept} if accept else {}
    if key == "function":
        headers["x-functions-key"] = stack.host.function_key
    elif key is not None:
        headers["x-functions-key"] = key
    return requests.get(f"{stack.host.url}/api/alerts", params={k: v for k, v in params.items() if v is not None},
                        headers=headers, timeout=60)


def follow(stack: LocalStack, **params: Any) -> tuple[list[dict[str, Any]], list[requests.Response]]:
    """Every alert the feed yields from `params` on, following the continuation until hasMore is false."""
    alerts: list[dict[str, Any]] = []
    responses = []
    while True:
        response = pull(stack, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        responses.append(response)
        alerts.extend(body["value"])
        if not body["hasMore"]:
            return alerts, responses
        params = {"continuation": body["continuation"], "pageSize": params.get("pageSize")}
        assert len(responses) < 10_000


def versions(tenant_id: str, count: int, start_ticks: int, **fields: Any) -> list[SourceAlert]:
    return [SourceAlert(tenant_id, f"da{uuid.uuid4().hex[:12]}-{i}", last_update_ticks=start_ticks + i, **fields)
            for i in range(count)]


def ticks_now() -> int:
    return time.time_ns() // 100


# --- paging and order --------------------------------------------------------------------------------------


def test_following_the_token_yields_a_tenants_alerts_in_storing_order(stack: LocalStack, seeder: WriterSeeder) -> None:
    tenant_id = new_tenant(seeder)
    stored = [versions(tenant_id, n, ticks_now()) for n in (99, 99, 52)]
    for batch in stored:
        seeder.store(batch)
    seeder.settle()

    alerts, responses = follow(stack, tenantId=tenant_id, pageSize=40)

    assert [a["alertId"] for a in alerts] == [a.alert_id for batch in stored for a in batch]
    assert len(responses) == 7  # 250 / 40, the last page telling the SIEM it is caught up


def test_an_alert_stored_late_reaches_a_siem_that_read_past_its_timestamp(
        stack: LocalStack, seeder: WriterSeeder) -> None:
    tenant_id = new_tenant(seeder)
    recent = versions(tenant_id, 5, ticks_now())
    seeder.store(recent)
    seeder.settle()
    read, responses = follow(stack, tenantId=tenant_id)
    token = responses[-1].json()["continuation"]
    # Visible at the source only now, with a last-update time an hour older than anything already read.
    late = versions(tenant_id, 1, ticks_now() - 3600 * TICKS_PER_SECOND)
    seeder.store(late)
    seeder.settle()

    more, _ = follow(stack, continuation=token)

    assert [a["alertId"] for a in read] == [a.alert_id for a in recent]
    assert [a["alertId"] for a in more] == [late[0].alert_id]


def test_rows_stored_within_the_settle_delay_are_served_on_a_later_page(
        stack: LocalStack, seeder: WriterSeeder) -> None:
    tenant_id = new_tenant(seeder)
    old = versions(tenant_id, 3, ticks_now())
    seeder.store(old)
    seeder.settle()
    fresh = versions(tenant_id, 2, ticks_now())
    with pytest.MonkeyPatch.context() as patch:  # a writer whose commit lands 2 s after its timestamp
        patch.setattr(store_module, "stored_ns", lambda: time.time_ns() + 2 * SECOND_NS)
        [fresh_key] = seeder.store(fresh).feed_keys

    first, responses = follow(stack, tenantId=tenant_id)
    # Served once the feed row's own stored time is past the settle delay: poll with the continuation.
    later: list[dict[str, Any]] = []
    token = responses[-1].json()["continuation"]
    deadline = time.monotonic() + 30
    while not later:
        assert time.monotonic() < deadline, "the fresh rows were never served"
        got, polled = follow(stack, continuation=token)
        later, token = got, polled[-1].json()["continuation"]
        time.sleep(0.1)

    assert int(fresh_key.split("|")[1]) > time.time_ns() - 60 * SECOND_NS  # stored just now, by the writer
    assert [a["alertId"] for a in first] == [a.alert_id for a in old]
    assert [a["alertId"] for a in later] == [a.alert_id for a in fresh]


def test_across_tenants_the_feed_yields_every_stored_version_at_least_once(
        stack: LocalStack, seeder: WriterSeeder) -> None:
    tenants = [new_tenant(seeder, f"Customer {i}") for i in range(4)]
    stored = []
    for round_ in range(3):
        for tenant_id in tenants:
            batch = versions(tenant_id, 7 + round_, ticks_now())
            seeder.store(batch)
            stored.extend(batch)
    seeder.settle()

    alerts, _ = follow(stack, pageSize=13)

    served = [(a["tenantId"], a["alertId"]) for a in alerts]
    mine = [item for item in served if item[0] in tenants]
    assert mine == [(a.tenant_id, a.alert_id) for a in stored]  # storing order, across tenants


def test_the_seeded_feed_rows_are_recorded_as_published_so_a_tick_would_not_publish_them_again(
        seeder: WriterSeeder) -> None:
    tenant_id = new_tenant(seeder)
    for _ in range(2):
        seeder.store(versions(tenant_id, 3, ticks_now()))

    row = seeder.tenants.get_entity("tenant", tenant_id)

    # What ingestion publishes again before storing anything (fetch_alerts/ingest.py): had the seeder left
    # this, a tick would have doubled the tenant's entries in the feed above.
    assert feed.unpublished(seeder.alerts, tenant_id, Tenant(row).feed_published) == []


def test_a_version_updated_after_it_was_fed_is_served_in_its_latest_version(
        stack: LocalStack, seeder: WriterSeeder) -> None:
    tenant_id = new_tenant(seeder)
    first = versions(tenant_id, 1, ticks_now(), status="new")[0]
    seeder.store([first])
    updated = SourceAlert(tenant_id, first.alert_id, status="resolved",
                          last_update_ticks=first.last_update_ticks + 10)
    assert seeder.store([updated]).stored == 1  # the writer replaced the row with the newer version
    seeder.settle()

    alerts, _ = follow(stack, tenantId=tenant_id)

    # Both feed rows name the alert; one page serves its current row once.
    assert [(a["alertId"], a["status"]) for a in alerts] == [(first.alert_id, "resolved")]


# --- shape ---------------------------------------------------------------------------------------------------


def test_each_alert_carries_its_tenant_customer_name_and_portal_link(stack: LocalStack, seeder: WriterSeeder) -> None:
    tenant_id = new_tenant(seeder, "Fabrikam, Inc. ü")
    alert = versions(tenant_id, 1, ticks_now())[0]
    seeder.store([alert])
    seeder.settle()

    alerts, _ = follow(stack, tenantId=tenant_id)

    assert alerts[0]["tenantId"] == tenant_id
    assert alerts[0]["customerName"] == "Fabrikam, Inc. ü"
    assert alerts[0]["portalLink"] == f"https://security.microsoft.com/alerts/{alert.alert_id}?tid={tenant_id}"


def test_ndjson_is_one_alert_per_line_with_the_continuation_in_headers(stack: LocalStack, seeder: WriterSeeder) -> None:
    tenant_id = new_tenant(seeder)
    stored = versions(tenant_id, 5, ticks_now())
    seeder.store(stored)
    seeder.settle()

    response = pull(stack, accept="application/x-ndjson", tenantId=tenant_id, pageSize=3)
    rest = pull(stack, accept="application/x-ndjson", continuation=response.headers["X-Continuation-Token"])

    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    lines = response.text.splitlines() + rest.text.splitlines()
    assert [json.loads(line)["alertId"] for line in lines] == [a.alert_id for a in stored]
    assert (response.headers["X-Has-More"], rest.headers["X-Has-More"]) == ("true", "false")


def test_json_is_the_default(stack: LocalStack) -> None:
    response = pull(stack, tenantId=str(uuid.uuid4()))

    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"value": [], "continuation": response.headers["X-Continuation-Token"],
                               "hasMore": False}


# --- filters ---------------------------------------------------------------------------------------------------


def test_severity_and_status_filters_select_matching_alerts_through_every_page(
        stack: LocalStack, seeder: WriterSeeder) -> None:
    tenant_id = new_tenant(seeder)
    stored = [SourceAlert(tenant_id, f"f{i}", severity=("high", "low", "medium")[i % 3],
                          status=("new", "resolved")[i % 2], last_update_ticks=ticks_now() + i) for i in range(60)]
    seeder.store(stored[:30])
    seeder.store(stored[30:])
    seeder.settle()

    alerts, _ = follow(stack, tenantId=tenant_id, severity="high,Medium", status="new", pageSize=4)

    expected = [a.alert_id for a in stored if a.severity in ("high", "medium") and a.status == "new"]
    assert [a["alertId"] for a in alerts] == expected


def test_the_tenant_filter_serves_only_that_tenant(stack: LocalStack, seeder: WriterSeeder) -> None:
    mine, other = new_tenant(seeder), new_tenant(seeder)
    seeder.store(versions(other, 3, ticks_now()))
    seeder.store(versions(mine, 2, ticks_now()))
    seeder.settle()

    alerts, _ = follow(stack, tenantId=mine.upper())

    assert {a["tenantId"] for a in alerts} == {mine} and len(alerts) == 2


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("params", "field"), [
    ({"pageSize": "0"}, "pageSize"),
    ({"pageSize": "1001"}, "pageSize"),
    ({"pageSize": "ten"}, "pageSize"),
    ({"pageSize": "²"}, "pageSize"),
    ({"pageSize": "101", "includePayload": "true"}, "pageSize"),
    ({"severity": "urgent"}, "severity"),
    ({"status": "closed"}, "status"),
    ({"tenantId": "contoso.com"}, "tenantId"),
    ({"includePayload": "yes"}, "includePayload"),
    ({"tenantID": str(uuid.UUID(int=1))}, "tenantID"),
])
def test_bad_parameters_are_a_400_problem_naming_the_parameter(stack: LocalStack, params: dict[str, str],
                                                               field: str) -> None:
    response = pull(stack, **params)

    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["field"] == field


def _valid_token(stack: LocalStack) -> str:
    return pull(stack, tenantId=str(uuid.uuid4())).json()["continuation"]


def _reencode(token: str, change: dict[str, Any]) -> str:
    """A token whose JSON was edited and re-encoded, keeping the old MAC."""
    version, encoded, mac = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    body.update(change)
    return f"{version}.{base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip('=')}.{mac}"


@pytest.mark.parametrize("tamper", [
    lambda t: "garbage",
    lambda t: "",
    lambda t: t[:-3],
    lambda t: t[:10] + ("A" if t[10] != "A" else "B") + t[11:],
    lambda t: _reencode(t, {"p": ["", "feed|x", 0]}),
    lambda t: "%%%." + "0" * 16,
    lambda t: base64.urlsafe_b64encode(b"\xff" * 40).decode() + ".0123456789abcdef",
    lambda t: t + "." + t,
], ids=["garbage", "empty", "truncated", "flipped", "edited", "not-base64", "binary", "doubled"])
def test_a_tampered_or_garbage_continuation_is_a_400_naming_it(stack: LocalStack, tamper: Any) -> None:
    response = pull(stack, continuation=tamper(_valid_token(stack)))

    assert response.status_code == 400
    assert response.json()["field"] == "continuation"


def test_a_continuation_with_other_filters_is_a_400(stack: LocalStack) -> None:
    token = _valid_token(stack)

    response = pull(stack, continuation=token, severity="high")

    assert response.status_code == 400
    assert response.json()["field"] == "continuation"


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_a_missing_or_wrong_key_is_a_401(stack: LocalStack, key: str | None) -> None:
    assert pull(stack, key=key).status_code == 401


# --- cost ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_page_of_a_tenant_with_100000_alerts_reads_a_bounded_number_of_rows(
        stack: LocalStack, seeder: WriterSeeder) -> None:
    tenant_id = new_tenant(seeder)
    base = ticks_now()
    # The writer's own transactions (99 versions each, as a backfill stores them), sent over raw $batch.
    assert seeder.store_bulk(versions(tenant_id, 100_089, base)) == 1011
    seeder.settle()

    first = pull(stack, tenantId=tenant_id, pageSize=100)
    filtered = pull(stack, tenantId=tenant_id, pageSize=100, severity="high")  # none match: the worst case
    middle = pull(stack, continuation=first.json()["continuation"], pageSize=1000)

    # Unfiltered: the alert rows served, the feed rows naming them (with read-ahead), the tenant's row and
    # the feed row the continuation resumes in.
    assert len(first.json()["value"]) == 100 and int(first.headers["X-Rows-Read"]) <= 100 + READ_AHEAD + 2
    assert len(middle.json()["value"]) == 1000 and int(middle.headers["X-Rows-Read"]) <= 1000 + READ_AHEAD + 2
    assert filtered.json()["value"] == [] and filtered.json()["hasMore"] is True
    assert int(filtered.headers["X-Rows-Read"]) <= max_rows_read(100)


@pytest.mark.slow
def test_a_page_across_1000_tenants_reads_a_bounded_number_of_rows(stack: LocalStack, seeder: WriterSeeder) -> None:
    tenants = [str(uuid.uuid4()) for _ in range(1000)]
    seeder.store_many([versions(t, 1, ticks_now()) for t in tenants])
    seeder.settle()

    response = pull(stack, pageSize=100)
    filtered = pull(stack, pageSize=100, status="unknownFutureValue")  # none match: the worst case

    # Per alert: its global feed row, its tenant feed row, its row and its tenant's row.
    assert len(response.json()["value"]) == 100
    assert int(response.headers["X-Rows-Read"]) <= 4 * 100 + READ_AHEAD
    assert filtered.json()["value"] == [] and int(filtered.headers["X-Rows-Read"]) <= max_rows_read(100)
