"""Graph alerts_v2 and Defender /api/alerts of the local cloud over HTTPS: $filter, paging, rendering, lag."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests

from local.cloud.alerts import canonical_hash
from local.run.services import LocalCloud, ServiceError
from tests.cloud import GRAPH_SCOPE, access_token, call, consented_pair

GRAPH_ALERTS = "/v1.0/security/alerts_v2"
DEFENDER_ALERTS = "/api/alerts"


class Customer:
    """A consented tenant with its own alert stream options, and tokens for both APIs."""

    def __init__(self, cloud: LocalCloud, **alerts: Any) -> None:
        self.cloud = cloud
        self.tenant_id, client_id = consented_pair(cloud, alerts={"lagSeconds": 0, **alerts})
        self.graph_token = access_token(cloud, self.tenant_id, client_id, GRAPH_SCOPE)
        self.defender_token = access_token(cloud, self.tenant_id, client_id)

    def now(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.cloud.control("GET", "clock").json()["now"])

    def add(self, **fields: Any) -> dict[str, Any]:
        return self.cloud.control("POST", f"tenants/{self.tenant_id}/alerts", json=fields).json()

    def update(self, alert_id: str, **changes: Any) -> dict[str, Any]:
        return self.cloud.control("PATCH", f"tenants/{self.tenant_id}/alerts/{alert_id}", json=changes).json()

    def truth(self) -> list[dict[str, Any]]:
        return self.cloud.control("GET", f"tenants/{self.tenant_id}/alerts").json()["alerts"]

    def graph(self, prefer: str | None = None, **params: str) -> requests.Response:
        headers = {"Prefer": prefer} if prefer else {}
        return call(self.cloud, "GET", GRAPH_ALERTS, self.graph_token, params=params, headers=headers)

    def graph_link(self, link: str) -> requests.Response:
        return requests.get(link, headers={"Authorization": f"Bearer {self.graph_token}"},
                            verify=str(self.cloud.ca_path), timeout=30)

    def defender(self, **params: str) -> requests.Response:
        return call(self.cloud, "GET", DEFENDER_ALERTS, self.defender_token, params=params)

    def graph_ids(self, **params: str) -> list[str]:
        response = self.graph(**params)
        assert response.status_code == 200, response.text
        return [alert["id"] for alert in response.json()["value"]]

    def defender_ids(self, **params: str) -> list[str]:
        response = self.defender(**params)
        assert response.status_code == 200, response.text
        return [alert["id"] for alert in response.json()["value"]]


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def customer(cloud: LocalCloud) -> Customer:
    return Customer(cloud)


@pytest.fixture
def boundary(customer: Customer) -> tuple[Customer, str]:
    """Alerts updated one microsecond before, exactly at, and one microsecond after a bound."""
    bound = customer.now().replace(microsecond=0) - dt.timedelta(hours=1)
    for name, offset in (("before", -1), ("at", 0), ("after", 1)):
        when = iso(bound + dt.timedelta(microseconds=offset))
        customer.add(id=name, createdDateTime=when, lastUpdateDateTime=when)
    return customer, bound.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_graph_ge_includes_the_exact_timestamp_and_gt_excludes_it(boundary: tuple[Customer, str]) -> None:
    customer, bound = boundary
    assert customer.graph_ids(**{"$filter": f"lastUpdateDateTime ge {bound}"}) == ["after", "at"]
    assert customer.graph_ids(**{"$filter": f"lastUpdateDateTime gt {bound}"}) == ["after"]


def test_defender_le_includes_the_exact_timestamp_and_lt_excludes_it(boundary: tuple[Customer, str]) -> None:
    customer, bound = boundary
    assert sorted(customer.defender_ids(**{"$filter": f"lastUpdateTime le {bound}"})) == ["at", "before"]
    assert customer.defender_ids(**{"$filter": f"lastUpdateTime lt {bound}"}) == ["before"]


def test_and_and_or_combine_comparisons(customer: Customer) -> None:
    customer.add(id="high-new", severity="high")
    customer.add(id="high-resolved", severity="high", status="resolved")
    customer.add(id="low-new", severity="low")
    both = customer.defender_ids(**{"$filter": "severity eq 'High' and status eq 'New'"})
    either = customer.graph_ids(**{"$filter": "severity eq 'low' or status eq 'resolved'"})
    assert both == ["high-new"]
    assert sorted(either) == ["high-resolved", "low-new"]


@pytest.mark.parametrize(("api", "bad_filter", "named"), [
    ("graph", "title eq 'x'", "title"),
    ("graph", "lastUpdateTime ge 2026-01-01T00:00:00Z", "lastUpdateTime"),
    ("defender", "computerDnsName eq 'x'", "computerDnsName"),
    ("defender", "lastUpdateTime ge '2026-01-01'", "lastUpdateTime"),
])
def test_a_bad_filter_is_a_400_naming_the_property(customer: Customer, api: str, bad_filter: str,
                                                   named: str) -> None:
    response = getattr(customer, api)(**{"$filter": bad_filter})
    assert response.status_code == 400
    error = response.json()["error"]
    assert named in error["message"]
    if api == "graph":
        assert error["code"] == "BadRequest" and set(error["innerError"]) == {"date", "request-id",
                                                                                "client-request-id"}
    else:
        assert error["code"] == "ODataError" and set(error) == {"code", "message", "target"}


def test_graph_rejects_a_top_over_its_maximum(customer: Customer) -> None:
    response = customer.graph(**{"$top": "5000"})
    assert response.status_code == 400
    assert "$top" in response.json()["error"]["message"]


def test_next_link_paging_visits_every_alert_exactly_once(cloud: LocalCloud) -> None:
    customer = Customer(cloud, seed="paging", count=23, start=iso(dt.datetime.now(dt.UTC) - dt.timedelta(days=2)))
    seen: list[str] = []
    response = customer.graph(**{"$top": "5"})
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [alert["id"] for alert in body["value"]]
        pages += 1
        if "@odata.nextLink" not in body:
            break
        assert body["@odata.nextLink"].startswith(cloud.url)
        response = customer.graph_link(body["@odata.nextLink"])
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23
    assert set(seen) == {alert["id"] for alert in customer.truth()}


def _ten_alerts(customer: Customer) -> tuple[str, list[str]]:
    """Ten new alerts, newest first a0..a9, all updated an hour ago; returns (filter bound, ids)."""
    hour_ago = customer.now() - dt.timedelta(hours=1)
    ids = [f"a{i}" for i in range(10)]
    for i, name in enumerate(ids):
        created = iso(hour_ago - dt.timedelta(minutes=i))
        customer.add(id=name, createdDateTime=created, lastUpdateDateTime=iso(hour_ago))
    return iso(hour_ago - dt.timedelta(seconds=1)), ids


def test_an_alert_entering_the_result_mid_paging_repeats_an_item_on_the_next_page(customer: Customer) -> None:
    bound, _ = _ten_alerts(customer)
    newest = iso(customer.now() - dt.timedelta(minutes=1))
    customer.add(id="late", createdDateTime=newest, lastUpdateDateTime=iso(customer.now() - dt.timedelta(days=1)))
    query = {"$filter": f"lastUpdateDateTime ge {bound}", "$top": "4"}
    first = customer.graph(**query).json()
    assert [a["id"] for a in first["value"]] == ["a0", "a1", "a2", "a3"]
    customer.update("late", severity="high")  # now updated after the bound: enters at the head
    second = customer.graph_link(first["@odata.nextLink"]).json()
    assert [a["id"] for a in second["value"]] == ["a3", "a4", "a5", "a6"]


def test_an_alert_leaving_the_result_mid_paging_skips_an_item(customer: Customer) -> None:
    _ten_alerts(customer)
    query = {"$filter": "status eq 'new'", "$top": "4"}
    first = customer.graph(**query).json()
    assert [a["id"] for a in first["value"]] == ["a0", "a1", "a2", "a3"]
    customer.update("a1", status="resolved")
    rest = customer.graph_link(first["@odata.nextLink"]).json()
    seen = [a["id"] for a in first["value"]] + [a["id"] for a in rest["value"]]
    assert "a4" not in seen
    assert [a["id"] for a in rest["value"]] == ["a5", "a6", "a7", "a8"]


def test_defender_top_and_skip_slice_the_list_without_a_next_link(customer: Customer) -> None:
    _ten_alerts(customer)
    response = customer.defender(**{"$top": "3", "$skip": "4"})
    assert [a["id"] for a in response.json()["value"]] == ["a5", "a4", "a3"]  # oldest first by default
    assert "@odata.nextLink" not in response.json()
    assert customer.defender(**{"$top": "10001"}).status_code == 400


def test_the_defender_list_order_is_a_tenant_setting_of_the_control_api(customer: Customer) -> None:
    _, ids = _ten_alerts(customer)
    path = f"tenants/{customer.tenant_id}"
    assert customer.defender_ids() == ids[::-1]
    assert customer.cloud.control("PATCH", path, json={"defenderOrder": "newestFirst"}).json()["defenderOrder"] \
        == "newestFirst"
    assert customer.defender_ids() == ids
    customer.cloud.control("PATCH", path, json={"defenderOrder": "shuffled"})
    served = [customer.defender_ids() for _ in range(6)]
    assert all(sorted(s) == sorted(ids) for s in served) and len({tuple(s) for s in served}) > 1
    assert customer.graph_ids() == ids  # Graph keeps its documented newest-first order
    with pytest.raises(ServiceError, match="400.*defenderOrder"):
        customer.cloud.control("PATCH", path, json={"defenderOrder": "sideways", "displayName": "X"})
    assert customer.cloud.control("GET", path).json()["displayName"] != "X"  # nothing changed


def test_defender_evidence_appears_only_with_expand(customer: Customer) -> None:
    customer.add(id="ev")
    plain = customer.defender().json()["value"][0]
    expanded = customer.defender(**{"$expand": "evidence"}).json()["value"][0]
    assert plain["evidence"] == []
    assert expanded["evidence"] and all("entityType" in item for item in expanded["evidence"])


def test_graph_shows_newer_enum_members_only_with_the_prefer_header(customer: Customer) -> None:
    customer.add(id="sentinel", serviceSource="microsoftSentinel", detectionSource="microsoftDefenderForCloud")
    plain = customer.graph().json()["value"][0]
    opted = customer.graph(prefer="include-unknown-enum-members").json()["value"][0]
    assert plain["serviceSource"] == plain["detectionSource"] == "unknownFutureValue"
    assert (opted["serviceSource"], opted["detectionSource"]) == ("microsoftSentinel", "microsoftDefenderForCloud")


def test_an_alert_is_invisible_until_the_ingestion_lag_has_passed(cloud: LocalCloud) -> None:
    customer = Customer(cloud, lagSeconds=120)
    customer.add(id="lagging")
    assert customer.graph_ids() == []
    assert customer.defender_ids() == []
    cloud.control("POST", "clock", json={"advance_seconds": 121})
    assert customer.graph_ids() == ["lagging"]
    assert customer.defender_ids() == ["lagging"]


def test_two_tenants_with_the_same_seed_serve_the_same_alert_ids(cloud: LocalCloud) -> None:
    options = {"seed": "twins", "alertsPerHour": 20, "start": iso(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))}
    first, second = Customer(cloud, **options), Customer(cloud, **options)
    ids = first.defender_ids()
    assert len(ids) > 100
    assert second.defender_ids() == ids
    assert second.graph_ids() == first.graph_ids()


def test_ground_truth_hashes_match_what_the_apis_serve(cloud: LocalCloud) -> None:
    customer = Customer(cloud, seed="hashes", count=30, unusualFraction=1.0,
                        start=iso(dt.datetime.now(dt.UTC) - dt.timedelta(days=1)))
    graph = customer.graph(prefer="include-unknown-enum-members").json()["value"]
    defender = customer.defender(**{"$expand": "evidence"}).json()["value"]
    truth = {alert["id"]: alert for alert in customer.truth()}
    assert {a["id"]: canonical_hash(a) for a in graph} == {i: t["graphHash"] for i, t in truth.items()}
    assert {a["id"]: canonical_hash(a) for a in defender} == {i: t["defenderHash"] for i, t in truth.items()}
