"""Faults of the local cloud: each knob, its scope (tenant, API, count), rate limits, and their counts."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
import requests

from local.run.services import LocalCloud
from tests.cloud import GRAPH_SCOPE, access_token, call, consented_pair, request_token


class Customer:
    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.tenant_id, self.client_id = consented_pair(cloud)
        self.defender_token = access_token(cloud, self.tenant_id, self.client_id)
        self.graph_token = access_token(cloud, self.tenant_id, self.client_id, GRAPH_SCOPE)

    def fault(self, **body: Any) -> dict[str, Any]:
        response = self.cloud.control("POST", f"tenants/{self.tenant_id}/faults", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def defender(self) -> requests.Response:
        return call(self.cloud, "GET", "/api/alerts", self.defender_token)

    def graph(self) -> requests.Response:
        return call(self.cloud, "GET", "/v1.0/security/alerts_v2", self.graph_token)

    def stats(self) -> dict[str, Any]:
        return self.cloud.control("GET", "stats").json()


@pytest.fixture
def customer(cloud: LocalCloud) -> Customer:
    return Customer(cloud)


def test_throttle_fault_answers_429_with_retry_after(customer: Customer) -> None:
    customer.fault(kind="throttle", retryAfter=42)
    response = customer.defender()
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "42"
    assert response.json()["error"]["code"] == "TooManyRequests"


def test_server_error_fault_answers_500(customer: Customer) -> None:
    customer.fault(kind="500")
    response = customer.graph()
    assert response.status_code == 500
    assert set(response.json()["error"]) == {"code", "message", "innerError"}


def test_unavailable_fault_answers_503(customer: Customer) -> None:
    customer.fault(kind="unavailable")
    response = customer.defender()
    assert response.status_code == 503
    assert set(response.json()["error"]) == {"code", "message", "target"}


def test_latency_fault_delays_the_response(customer: Customer) -> None:
    customer.fault(kind="latency", latencyMs=400)
    response = customer.defender()
    assert response.status_code == 200
    # The cloud's own record: this request was served with the latency fault (and nothing else).
    assert customer.stats()["faultsServed"][customer.tenant_id] == {"latency": 1}


def test_dropped_connection_closes_without_a_response(customer: Customer) -> None:
    customer.fault(kind="drop_connection", count=1)
    with pytest.raises(requests.ConnectionError):
        customer.defender()
    assert customer.defender().status_code == 200


def test_truncated_json_fault_cuts_the_body(customer: Customer) -> None:
    full = customer.defender().content
    customer.fault(kind="truncated_json", count=1)
    response = customer.defender()
    assert response.status_code == 200
    assert full.startswith(response.content) and len(response.content) < len(full)
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_malformed_json_fault_breaks_the_body(customer: Customer) -> None:
    customer.fault(kind="malformed_json", api="graph")
    response = customer.graph()
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_consent_revoked_fault_fails_token_requests_with_aadsts700016(customer: Customer) -> None:
    customer.fault(kind="consent_revoked")
    response = request_token(customer.cloud, customer.tenant_id, customer.client_id)
    assert response.status_code == 400
    assert response.json()["error_codes"] == [700016]


def test_permission_removed_fault_issues_tokens_without_roles(customer: Customer) -> None:
    customer.fault(kind="permission_removed", api="token")
    token = request_token(customer.cloud, customer.tenant_id, customer.client_id).json()["access_token"]
    assert "roles" not in jwt.decode(token, options={"verify_signature": False})
    response = call(customer.cloud, "GET", "/api/alerts", token)
    assert response.status_code == 403
    assert response.json()["error"]["message"] == (
        "Missing application roles. API required roles: Alert.Read.All,Alert.ReadWrite.All, application roles: .")


def test_permission_removed_fault_makes_the_api_answer_403(customer: Customer) -> None:
    customer.fault(kind="permission_removed", api="graph")
    response = customer.graph()
    assert response.status_code == 403
    assert response.json()["error"]["message"].startswith("Missing application roles.")


def test_feature_disabled_fault_answers_403_disabled_feature(customer: Customer) -> None:
    customer.fault(kind="feature_disabled", api="defender")
    response = customer.defender()
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "DisabledFeature"


def test_counted_fault_applies_to_the_next_n_requests_only(customer: Customer) -> None:
    customer.fault(kind="500", count=2)
    assert [customer.defender().status_code for _ in range(3)] == [500, 500, 200]
    assert customer.cloud.control("GET", f"tenants/{customer.tenant_id}/faults").json()["faults"] == []


def test_fault_limited_to_one_api_leaves_the_others_alone(customer: Customer) -> None:
    customer.fault(kind="503", api="defender")
    assert customer.defender().status_code == 503
    assert customer.graph().status_code == 200
    assert request_token(customer.cloud, customer.tenant_id, customer.client_id).status_code == 200


def test_fault_applies_only_to_its_tenant(customer: Customer, cloud: LocalCloud) -> None:
    other = Customer(cloud)
    customer.fault(kind="500")
    assert customer.defender().status_code == 500
    assert other.defender().status_code == 200


def test_token_endpoint_fault_answers_in_entra_shape(customer: Customer) -> None:
    customer.fault(kind="429", api="token", retryAfter=3)
    response = request_token(customer.cloud, customer.tenant_id, customer.client_id)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert "error_codes" in response.json()


def test_cleared_faults_stop_applying(customer: Customer) -> None:
    fault = customer.fault(kind="500")
    assert customer.defender().status_code == 500
    assert customer.cloud.control("DELETE", f"tenants/{customer.tenant_id}/faults/{fault['id']}").status_code == 204
    assert customer.defender().status_code == 200


def test_unknown_fault_kind_is_refused(customer: Customer) -> None:
    response = call(customer.cloud, "POST", f"/control/tenants/{customer.tenant_id}/faults", json={"kind": "gremlins"})
    assert response.status_code == 400


@pytest.mark.parametrize(("api", "limit"), [("defender", 100), ("graph", 150)])
def test_rate_limit_allows_the_real_calls_per_minute_then_429(customer: Customer, api: str, limit: int) -> None:
    customer.cloud.control("PATCH", f"tenants/{customer.tenant_id}", json={"rateLimits": True})
    token = customer.defender_token if api == "defender" else customer.graph_token
    path = "/api/alerts" if api == "defender" else "/v1.0/security/alerts_v2"
    with requests.Session() as session:
        # verify per request: REQUESTS_CA_BUNDLE in the environment would override session.verify.
        session.headers["Authorization"] = f"Bearer {token}"
        statuses = [session.get(f"{customer.cloud.url}{path}", verify=str(customer.cloud.ca_path), timeout=30)
                    for _ in range(limit + 1)]
    assert [r.status_code for r in statuses[:limit]] == [200] * limit
    assert statuses[limit].status_code == 429
    assert 1 <= int(statuses[limit].headers["Retry-After"]) <= 60
    assert customer.stats()["throttled"][customer.tenant_id][api] == 1


def test_rate_limits_are_off_unless_switched_on(customer: Customer) -> None:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {customer.defender_token}"
        statuses = {session.get(f"{customer.cloud.url}/api/alerts", verify=str(customer.cloud.ca_path),
                                timeout=30).status_code for _ in range(105)}
    assert statuses == {200}


def test_faults_served_are_counted(customer: Customer) -> None:
    customer.fault(kind="429", count=2)
    customer.defender()
    customer.graph()
    stats = customer.stats()
    assert stats["faultsServed"][customer.tenant_id] == {"throttle": 2}
    assert stats["throttled"][customer.tenant_id] == {"defender": 1, "graph": 1}
    assert stats["apiRequests"][customer.tenant_id] == {"defender": 1, "graph": 1}
