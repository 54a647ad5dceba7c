"""Pure logic of the SIEM pull API's request parsing and continuation tokens (fetch_alerts/siem_token.py).

The HTTP behaviour is tested on the local stack (test_pull_tokens.py); here the properties are checked with
many more examples than HTTP allows: a token round-trips, nothing without the key verifies, and even a
token MACed with the key (a leaked key) is either valid or refused, never an exception of another kind.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fetch_alerts.pull_request import PullRequest, _wants_ndjson, parse_request
from fetch_alerts.siem_token import (
    MAX_TOKEN_LENGTH,
    SEVERITIES,
    STATUSES,
    Filters,
    Position,
    TokenInvalid,
    decode_token,
    encode_token,
)
from shared.problems import Problem

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
TENANT = "0f5e7d5a-8d2c-4a55-9a0e-3f1b2c3d4e5f"
GLOBAL_POSITION = Position("202405011230", f"{'1' * 20}|{TENANT}|feed|{'2' * 20}|abcdef01", 7)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign(payload: bytes, key: bytes = KEY, version: str = "2") -> str:
    """A token in the documented format around any payload: what a holder of the key could make."""
    signed = f"{version}.{b64(payload)}"
    mac = hmac.new(key, b"mssp-alerts siem continuation\n" + signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64(mac)}"


def body(**change: Any) -> bytes:
    document: dict[str, Any] = {"f": {"t": None, "sev": [], "st": []}, "p": ["", "", None]}
    document.update(change)
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


# --- round trip -------------------------------------------------------------------------------------------

_filters = st.builds(
    Filters,
    tenant_id=st.none() | st.just(TENANT),
    severities=st.sets(st.sampled_from([s.lower() for s in SEVERITIES])).map(lambda s: tuple(sorted(s))),
    statuses=st.sets(st.sampled_from([s.lower() for s in STATUSES])).map(lambda s: tuple(sorted(s))))


@settings(max_examples=300)
@given(filters=_filters, index=st.none() | st.integers(0, 99), at_start=st.booleans())
def test_a_token_round_trips_filters_and_position(filters: Filters, index: int | None, at_start: bool) -> None:
    if at_start:
        position = Position()
    elif filters.tenant_id:
        position = Position("", f"feed|{'3' * 20}|0123abcd", index)
    else:
        position = Position(GLOBAL_POSITION.partition, GLOBAL_POSITION.key, index)

    token = encode_token(filters, position, KEY)

    assert decode_token(token, KEY) == (filters, position)
    assert len(token) <= MAX_TOKEN_LENGTH // 2


def test_the_longest_token_stays_well_under_the_limit() -> None:
    everything = Filters(None, tuple(sorted(s.lower() for s in SEVERITIES)), tuple(sorted(s.lower() for s in STATUSES)))

    assert len(encode_token(everything, GLOBAL_POSITION, KEY)) < MAX_TOKEN_LENGTH * 3 // 4


def test_the_documented_format_is_what_the_encoder_makes() -> None:
    filters = Filters(TENANT, ("high",), ("new",))
    position = Position("", f"feed|{'3' * 20}|0123abcd", 4)
    payload = json.dumps({"f": {"t": TENANT, "sev": ["high"], "st": ["new"]}, "p": ["", position.key, 4]},
                         separators=(",", ":"), sort_keys=True).encode()

    assert encode_token(filters, position, KEY) == sign(payload)


# --- without the key ------------------------------------------------------------------------------------------


def test_a_token_made_with_another_key_is_refused_before_decoding() -> None:
    token = encode_token(Filters(), GLOBAL_POSITION, OTHER_KEY)

    with pytest.raises(TokenInvalid) as refused:
        decode_token(token, KEY)
    assert not refused.value.authentic


def test_every_single_character_change_and_every_truncation_is_refused() -> None:
    token = encode_token(Filters(TENANT, ("high",), ()), Position("", f"feed|{'3' * 20}|0123abcd", 4), KEY)
    alphabet = "ABab09-_."
    for i, char in enumerate(token):
        for other in alphabet:
            if other != char:
                with pytest.raises(TokenInvalid):
                    decode_token(token[:i] + other + token[i + 1:], KEY)
    for end in range(len(token)):
        with pytest.raises(TokenInvalid):
            decode_token(token[:end], KEY)


def test_an_unkeyed_token_of_the_old_format_is_refused() -> None:
    payload = b'{"f":{"sev":[],"st":[],"t":null},"p":["","",null],"v":1}'
    old = b64(payload) + "." + hashlib.sha256(b"mssp-alerts siem continuation v1\n" + payload).hexdigest()[:16]

    with pytest.raises(TokenInvalid):
        decode_token(old, KEY)


@settings(max_examples=500)
@given(token=st.text(max_size=MAX_TOKEN_LENGTH + 50) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_no_text_without_the_key_decodes(token: str) -> None:
    with pytest.raises(TokenInvalid) as refused:
        decode_token(token, KEY)
    assert not refused.value.authentic


# --- with the key: every field still checked ---------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b"[" * 700,  # deep enough to exhaust the parser's recursion in a worker thread, short enough to verify
    b'{"f":' + b"[" * 600,
    b"[" * 300 + b"]" * 300,
    body(f={"t": None, "sev": [["high"]], "st": []}),
    body(f={"t": None, "sev": [], "st": [{"new": 1}]}),
    body(f={"t": None, "sev": "high", "st": []}),
    body(f={"t": None, "sev": ["high", "high"], "st": []}),
    body(f={"t": None, "sev": ["low", "high"], "st": []}),
    body(f={"t": None, "sev": ["HIGH"], "st": []}),
    body(f={"t": TENANT.upper(), "sev": [], "st": []}),
    body(f={"t": TENANT + "\n", "sev": [], "st": []}),
    body(f={"t": 7, "sev": [], "st": []}),
    body(f={"t": None, "sev": [], "st": [], "x": 1}),
    body(f=[]),
    body(p=["", "", 5]),
    body(p=["", "", None, None]),
    body(p=[GLOBAL_POSITION.partition, GLOBAL_POSITION.key, True]),
    body(p=[GLOBAL_POSITION.partition, GLOBAL_POSITION.key, -1]),
    body(p=[GLOBAL_POSITION.partition, GLOBAL_POSITION.key, 100]),
    body(p=[GLOBAL_POSITION.partition, GLOBAL_POSITION.key, 1.5]),
    body(p=[GLOBAL_POSITION.partition, GLOBAL_POSITION.key + "\n", None]),
    body(p=[GLOBAL_POSITION.partition, "feed|x", None]),
    body(p=["", f"feed|{'3' * 20}|0123abcd", None]),  # a tenant key without a tenant filter
    body(p=[["a"], "", None]),
    body(v=2),
    b'{"f":{"sev":[],"st":[],"t":null},"p":["","",NaN]}',
    b'{"f":{"sev":[],"st":[],"t":null},"p":["","",null],"p":["","",null]}',
    b'{"f":{"sev":[],"st":[],"t":null},"p":["","",1' + b"0" * 600 + b"]}",
    b"null", b"[]", b'"text"', b"\xff\xfe", "{}".encode("utf-16"),
], ids=lambda payload: payload[:40].decode("latin-1"))
def test_a_malformed_token_with_a_valid_mac_is_refused(payload: bytes) -> None:
    with pytest.raises(TokenInvalid) as refused:
        decode_token(sign(payload), KEY)
    assert refused.value.authentic


def test_an_oversized_token_is_refused_before_its_mac_is_computed() -> None:
    with pytest.raises(TokenInvalid, match="too long"):
        decode_token(sign(b"[" * 1500), KEY)


def test_a_token_of_another_version_with_a_valid_mac_is_refused() -> None:
    with pytest.raises(TokenInvalid):
        decode_token(sign(body(), version="3"), KEY)


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=30)


@settings(max_examples=500)
@given(document=_json | st.fixed_dictionaries({"f": _json, "p": _json})
       | st.fixed_dictionaries({"f": st.fixed_dictionaries({"t": _json, "sev": _json, "st": _json}), "p": _json}))
def test_any_json_with_a_valid_mac_is_refused_or_valid(document: Any) -> None:
    try:
        filters, position = decode_token(sign(json.dumps(document).encode()), KEY)
    except TokenInvalid:
        return
    assert filters == Filters(document["f"]["t"], tuple(document["f"]["sev"]), tuple(document["f"]["st"]))


@settings(max_examples=300)
@given(payload=st.binary(max_size=600))
def test_any_bytes_with_a_valid_mac_are_refused_or_valid(payload: bytes) -> None:
    try:
        filters, position = decode_token(sign(payload), KEY)
    except TokenInvalid:
        return
    # Accepted: then it is a well-formed position that the API's own encoding gives back unchanged.
    assert isinstance(filters, Filters) and isinstance(position, Position)
    assert decode_token(encode_token(filters, position, KEY), KEY) == (filters, position)


# --- the query string and Accept -----------------------------------------------------------------------------

_names = st.sampled_from(["continuation", "tenantId", "severity", "status", "pageSize", "includePayload", "code"])


@settings(max_examples=1000)
@given(params=st.dictionaries(_names | st.text(max_size=10), st.text(max_size=200), max_size=5),
       accept=st.none() | st.text(max_size=100))
def test_any_query_string_parses_or_is_a_400(params: dict[str, str], accept: str | None) -> None:
    try:
        request = parse_request(params, accept, KEY)
    except Problem as problem:
        assert problem.status == 400
        assert problem.field is None or problem.field in params
        return
    assert isinstance(request, PullRequest)


@settings(max_examples=300)
@given(name=st.text(min_size=1, max_size=300).filter(lambda n: not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", n)))
def test_an_odd_unknown_parameter_name_is_not_named_back(name: str) -> None:
    with pytest.raises(Problem) as odd:
        parse_request({name: "x"}, None, KEY)
    with pytest.raises(Problem) as plain:
        parse_request({"tenantID": "x"}, None, KEY)
    assert odd.value.field is None and odd.value.detail == plain.value.detail


@pytest.mark.parametrize(("accept", "ndjson"), [
    (None, False), ("application/json", False), ("application/x-ndjson", True),
    ("Application/X-NDJSON ; q=0.5", True), ("application/x-ndjson;q=0", False),
    ("application/x-ndjson;q=0.000", False),
    ("application/x-ndjson;q=nan", True), ("application/x-ndjson;q=1e999", True), ("application/x-ndjson;q=-1", True),
    ("text/html, application/x-ndjson;q=0.1", True), (";;;,,,;q=", False),
])
def test_accept_chooses_ndjson_only_when_named_with_a_nonzero_weight(accept: str | None, ndjson: bool) -> None:
    assert _wants_ndjson(accept) is ndjson


@settings(max_examples=500)
@given(accept=st.text(max_size=300))
def test_any_accept_header_chooses_a_format(accept: str) -> None:
    assert _wants_ndjson(accept) in (True, False)
