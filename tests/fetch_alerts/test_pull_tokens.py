"""Continuation tokens and request parsing of the SIEM pull API, attacked over real HTTP on the local host.

A token is MACed with SIEM_TOKEN_KEY: a forged, damaged, truncated, oversized or foreign-key token is a
400 problem+json naming `continuation`, and no query string or Accept header gives a 5xx. Data is
ingested through the real timer from the local cloud; the key-rotation tests restart the host.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fetch_alerts.siem_token import Filters, Position, encode_token
from local.run.stack import LocalStack
from tests.fetch_alerts.harness import add_tenant, hours_ago, run_tick, start_stack
from tests.fetch_alerts.truth import ground_truth

SETTLE_SECONDS = 1
_OLD_CHECKSUM_CONTEXT = b"mssp-alerts siem continuation v1\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    service = start_stack(tmp_path_factory.mktemp("pull-tokens"), SIEM_FEED_SETTLE_SECONDS=str(SETTLE_SECONDS))
    yield service
    service.stop()


def pull(stack: LocalStack, params: dict[str, Any] | None = None, *, accept: str | None = None,
         query: str | None = None) -> requests.Response:
    """GET /api/alerts with `params`, or with a raw, already percent-encoded `query`."""
    assert stack.host is not None
    headers = {"x-functions-key": stack.host.function_key}
    if accept is not None:
        headers["Accept"] = accept
    url = f"{stack.host.url}/api/alerts" + (f"?{query}" if query is not None else "")
    return requests.get(url, params=params, headers=headers, timeout=60)


def assert_bad_continuation(response: requests.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.json()["field"] == "continuation"


def old_style(body: bytes) -> str:
    """A token as the unkeyed format made them: anyone can recompute its checksum."""
    return (base64.urlsafe_b64encode(body).decode().rstrip("=") + "."
            + hashlib.sha256(_OLD_CHECKSUM_CONTEXT + body).hexdigest()[:16])


def old_body(**change: Any) -> bytes:
    body = {"v": 1, "f": {"t": None, "sev": [], "st": []}, "p": ["", "", None]}
    body.update(change)
    return json.dumps(body, separators=(",", ":")).encode()


# --- forged tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [
    old_style(b"[" * 1500),
    old_style(b'{"v":1,"p":' + b"[" * 1450),
    old_style(old_body(f={"t": None, "sev": [["high"]], "st": []})),
    old_style(old_body(f={"t": None, "sev": [], "st": [{"new": 1}]})),
    old_style(old_body(f={"t": None, "sev": "high", "st": []})),
    old_style(old_body(p=["", "", 5])),
    old_style(b"[1,2,3]"),
    old_style(b"null"),
], ids=["nested-arrays", "nested-position", "list-in-filter", "object-in-filter", "string-filter",
        "index-without-key", "array", "null"])
def test_a_forged_token_with_a_recomputed_checksum_is_a_400(stack: LocalStack, token: str) -> None:
    assert_bad_continuation(pull(stack, {"continuation": token}))


@pytest.mark.parametrize("length", [1025, 4000, 7000])
def test_a_huge_token_is_a_400(stack: LocalStack, length: int) -> None:
    assert_bad_continuation(pull(stack, {"continuation": ("A" * length)[:length - 17] + "." + "0" * 16}))


# --- any input -------------------------------------------------------------------------------------------

_PARAMETERS = ("continuation", "tenantId", "severity", "status", "pageSize", "includePayload")
# What an HTTP client can put in a header value: no control characters or leading blanks (a client refuses
# those).
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                       max_size=200).map(str.lstrip)
_PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_PROPERTY
@given(name=st.sampled_from(_PARAMETERS), value=st.text(st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_no_text_in_a_parameter_gives_a_5xx(stack: LocalStack, name: str, value: str) -> None:
    response = pull(stack, {name: value})

    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.headers["Content-Type"].startswith("application/problem+json")


@_PROPERTY
@given(names=st.lists(st.sampled_from(_PARAMETERS), min_size=1, max_size=4),
       values=st.lists(st.binary(max_size=120), min_size=4, max_size=4))
def test_no_bytes_in_the_query_string_give_a_5xx(stack: LocalStack, names: list[str], values: list[bytes]) -> None:
    # Raw bytes, percent-encoded: invalid UTF-8 and repeated parameters included.
    query = "&".join(f"{name}={quote_from_bytes(value, safe='')}" for name, value in zip(names, values, strict=False))

    response = pull(stack, query=query)

    assert response.status_code < 500, response.text


@_PROPERTY
@given(accept=_HEADER_TEXT, name=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80))
def test_no_accept_header_or_parameter_name_gives_a_5xx(stack: LocalStack, accept: str, name: str) -> None:
    response = pull(stack, {name: "x"}, accept=accept)

    assert response.status_code < 500, response.text
    if response.status_code != 200:  # a problem reflects nothing raw: JSON-escaped ASCII only
        assert response.content.isascii() and not any(byte < 0x20 for byte in response.content)


# --- tokens over ingested alerts ----------------------------------------------------------------------------


def ingested_tenant(stack: LocalStack, count: int) -> tuple[str, list[str]]:
    """A tenant whose `count` alerts the real timer ingested, once they are servable; its alert ids."""
    tenant_id = add_tenant(stack, alerts={"count": count, "start": hours_ago(stack, 2), "lagSeconds": 0,
                                          "updatesPerAlert": 0})
    run_tick(stack)
    ids = sorted(a["id"] for a in ground_truth(stack, tenant_id))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # rows become servable after the settle delay
        if len(pull(stack, {"tenantId": tenant_id, "pageSize": 1000}).json()["value"]) == len(ids):
            return tenant_id, ids
        time.sleep(0.2)
    raise TimeoutError("the ingested alerts never became servable")


def test_a_token_of_one_tenant_replayed_for_another_is_a_400(stack: LocalStack) -> None:
    tenant_id, _ = ingested_tenant(stack, 4)
    token = pull(stack, {"tenantId": tenant_id, "pageSize": 2}).json()["continuation"]

    assert_bad_continuation(pull(stack, {"continuation": token, "tenantId": str(uuid.uuid4())}))
    assert_bad_continuation(pull(stack, {"continuation": token, "tenantId": tenant_id, "status": "new"}))
    assert pull(stack, {"continuation": token, "tenantId": tenant_id}).status_code == 200


def test_a_token_made_with_another_key_or_cut_short_is_a_400(stack: LocalStack) -> None:
    tenant_id, _ = ingested_tenant(stack, 3)
    token = pull(stack, {"tenantId": tenant_id, "pageSize": 1}).json()["continuation"]
    version, payload, _ = token.split(".")
    foreign = encode_token(Filters(tenant_id=tenant_id), Position(), secrets.token_hex(32).encode())

    assert_bad_continuation(pull(stack, {"continuation": foreign}))
    for cut in (token[:-1], token[:-43], f"{version}.{payload}", token[: len(token) // 2], payload):
        assert_bad_continuation(pull(stack, {"continuation": cut}))
    assert pull(stack, {"continuation": token}).status_code == 200


# --- the key --------------------------------------------------------------------------------------------------


def restart_host(stack: LocalStack, key: str) -> None:
    """A new host process with SIEM_TOKEN_KEY = `key`: nothing of the previous process survives."""
    assert stack.host is not None
    stack.settings["SIEM_TOKEN_KEY"] = key
    stack.host.stop()
    stack.start_host()


def follow(stack: LocalStack, token: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    for _ in range(100):
        response = pull(stack, {"continuation": token, "pageSize": 2})
        assert response.status_code == 200, response.text
        alerts.extend(response.json()["value"])
        token = response.json()["continuation"]
        if not response.json()["hasMore"]:
            return alerts
    raise AssertionError("the feed never ended")


def test_a_token_survives_a_host_restart_with_the_same_key_and_not_a_new_key(stack: LocalStack) -> None:
    tenant_id, ids = ingested_tenant(stack, 9)
    first = pull(stack, {"tenantId": tenant_id, "pageSize": 4}).json()
    assert len(first["value"]) == 4 and first["hasMore"]
    key = stack.settings["SIEM_TOKEN_KEY"]
    try:
        restart_host(stack, key)
        rest = follow(stack, first["continuation"])
        assert sorted(a["alertId"] for a in first["value"] + rest) == ids  # each once, none lost

        restart_host(stack, secrets.token_hex(32))
        assert_bad_continuation(pull(stack, {"continuation": first["continuation"]}))
        fresh = pull(stack, {"tenantId": tenant_id, "pageSize": 4}).json()
        assert fresh["value"] == first["value"] and fresh["continuation"] != first["continuation"]
    finally:
        restart_host(stack, key)


def log_once(log: Path, offset: int, needle: str, timeout: float = 20.0) -> str:
    """The host log after `offset` once it holds `needle` (the worker's records arrive a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        with log.open("rb") as file:
            file.seek(offset)
            text = file.read().decode(errors="replace")
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


@pytest.mark.parametrize("key", ["", "too-short-for-a-key", "@Microsoft.KeyVault(SecretUri=https://v/secrets/k)"],
                         ids=["empty", "short", "unresolved"])
def test_without_a_usable_key_the_api_refuses_with_a_503_and_logs_why(stack: LocalStack, key: str) -> None:
    good = stack.settings["SIEM_TOKEN_KEY"]
    token = pull(stack, {"pageSize": 1}).json()["continuation"]
    log = stack.workdir / "host" / "host.log"
    try:
        restart_host(stack, key)
        offset = log.stat().st_size
        responses = [pull(stack), pull(stack, {"continuation": token})]
        text = log_once(log, offset, "SIEM pull refused")
    finally:
        restart_host(stack, good)

    for response in responses:
        assert response.status_code == 503
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert response.json()["detail"] == "not configured: SIEM_TOKEN_KEY"
        assert "X-Continuation-Token" not in response.headers
    assert "SIEM pull refused" in text and "SIEM_TOKEN_KEY" in text and "Traceback" not in text
    assert token not in text and (not key or key not in text)
