"""Property-based tests of the two endpoints that face the outside world: arbitrary query strings at
the consent callback and arbitrary bodies at the onboarding webhook. Whatever arrives: never a 5xx, never
an unescaped reflection, and the tables are byte-for-byte unchanged by every rejected request.

One stack serves every example (hundreds of requests over one keep-alive session)."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.signing import signature_headers
from tests.grant_access.conftest import Onboarding, start_onboarding

EXAMPLES = 500
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HTML_SPECIAL = set("<>\"'&")


class Probe:
    """The stack, a keep-alive session, and cheap table snapshots."""

    def __init__(self, env: Onboarding) -> None:
        self.env = env
        self.http = requests.Session()
        self.service = env.tables()
        self.baseline = self.snapshot()

    def snapshot(self) -> dict[str, list[tuple[str, str, str]]]:
        result = {}
        for table in sorted(t.name for t in self.service.list_tables()):
            rows = self.service.get_table_client(table).list_entities()
            result[table] = sorted((r["PartitionKey"], r["RowKey"], r.metadata["etag"]) for r in rows)
        return result

    def check_unchanged_unless_accepted(self, response: requests.Response) -> None:
        after = self.snapshot()
        if response.status_code >= 400:
            assert after == self.baseline, f"a rejected request ({response.status_code}) changed the tables"
        self.baseline = after


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Probe]:
    env = start_onboarding(Path(tmp_path_factory.mktemp("properties")))
    # One real onboarding first, so every table exists and real states are in storage.
    tenant = env.new_tenant()
    env.open(env.answer_consent(env.invite(tenantId=tenant)["consentUrl"]))
    env.invite(tenantId=env.new_tenant())
    yield Probe(env)
    env.stack.stop()


def _not_reflected(text: str, values: list[str], template: str = "") -> None:
    """No input value with HTML-special characters appears unescaped. A value that is also a piece of our own
    markup without any input (`template`, e.g. "</") cannot be told apart from it and is not counted."""
    lowered = text.lower()
    assert "<script" not in lowered and "onerror" not in lowered
    for value in values:
        if HTML_SPECIAL & set(value) and len(value) >= 2 and value not in template:
            assert value not in text, f"unescaped reflection of {value!r}"


# --- the consent callback ------------------------------------------------------------------------------------

PARAMS = ["admin_consent", "tenant", "state", "scope", "error", "error_description", "error_uri", "session_state",
          "code", "x"]
hostile_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["True", "true", "FALSE", "", "<script>alert(1)</script>", '"><img src=x onerror=alert(1)>',
                     "0b6f2a1c-3d4e-4f5a-8b9c-0d1e2f3a4b5c", "contoso.example", "consent_required",
                     "AADSTS650052: x", "permission_denied", "A" * 43, "%00", "a&b=c"]),
)
query_pairs = st.lists(st.tuples(st.sampled_from(PARAMS) | st.text(max_size=10), hostile_text), max_size=8)
raw_queries = st.text(alphabet=string.printable + "é€\x00", max_size=300)


@pytest.mark.slow
@FUZZ
@given(pairs=query_pairs, raw=raw_queries, use_raw=st.booleans())
def test_the_consent_callback_survives_any_query_string(probe, pairs, raw, use_raw):
    query = raw.replace("#", "%23") if use_raw else urlencode(pairs)
    response = probe.http.get(f"{probe.env.host_url}/api/consent/callback?{query}", timeout=30)

    assert response.status_code < 500, response.text[:300]
    assert response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    template = probe.http.get(f"{probe.env.host_url}/api/consent/callback", timeout=30).text
    _not_reflected(response.text, [v for _, v in pairs] + [raw], template)
    probe.check_unchanged_unless_accepted(response)


# --- the onboarding webhook -----------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), hostile_text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
FIELDS = ["customerName", "tenantId", "externalId", "contactEmail", "alertSource", "callbackUrl", "rules"]
field_values = st.one_of(json_values, st.sampled_from([
    "https://127.0.0.1/x", "https://169.254.169.254/", "http://hooks.example.com/", "graph", "defender",
    "nobody@", "a@b.example", "0b6f2a1c-3d4e-4f5a-8b9c-0d1e2f3a4b5c", "unknown.example",
    [{"name": "r", "recipients": ["<b>@x"]}], [{"name": "<script>", "recipients": ["a@b.example"]}]]))
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), field_values, max_size=6)
    .map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from([b'{"customerName": "\\ud800"}', b'{"customerName": "a\\u202eb"}', b"[" * 3000,
                     b'{"customerName": "x", "customerName": "y"}', b"\xef\xbb\xbf{}"]),
)
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "",
                                 "application/x-www-form-urlencoded", "APPLICATION/JSON"])


@pytest.mark.slow
@FUZZ
@given(body=bodies, content_type=content_types, signed=st.sampled_from([True, True, True, False]))
def test_the_webhook_survives_any_body(probe, body, content_type, signed):
    headers: dict[str, Any] = {"x-functions-key": probe.env.key, "Content-Type": content_type}
    if signed:
        headers.update(signature_headers(probe.env.webhook_secret, body))
    response = probe.http.post(f"{probe.env.host_url}/api/tenants", data=body, headers=headers, timeout=30)

    assert response.status_code < 500, response.text[:300]
    assert response.status_code in (200, 201, 400, 401, 409, 413, 415)
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("application/problem+json")
    json.loads(response.text)  # always well-formed JSON, whatever was sent
    assert "<script" not in response.text
    probe.check_unchanged_unless_accepted(response)
