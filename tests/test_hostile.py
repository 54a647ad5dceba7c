"""Hostile requests against every HTTP route of the real app on the local host, counted and judged.

Routes come from the app itself (`function_app.app.get_functions()`), so a route added later is attacked by
the generic tests without touching this file, and the last test fails if any route went unattacked. Every
response is judged by tests/hostile_support.Ledger: no 5xx, no marker reflected raw outside JSON (or in
any header), no platform key or `code=` parameter, no link to the platform's own routes, a 401 for every
FUNCTION route called without a valid key. The consent callback is attacked with forged, replayed and
garbage states, tenants and id_tokens, and the Tenants table must come out of it byte-for-byte unchanged.

Each family asserts its own offences (so a failure names the family); the last test asserts the totals and
prints one summary line (also written to the run's tmp dir).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shared.signing as signing
from fetch_alerts import siem_token
from local.run.onboarding import OnboardingError
from tests.grant_access.conftest import MSSP_TENANT, Onboarding
from tests.hostile_support import BIDI, MARKERS, Ledger, Route, enc, header_value, http_routes, start_hostile_stack

logger = logging.getLogger(__name__)

ROUTES = http_routes()
BY_NAME = {r.name: r for r in ROUTES}
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
CALLBACK = "/api/consent/callback"

# Small budgets: the whole module has to stay around a minute and a half on two cores.
FEW = settings(max_examples=40, deadline=None, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much, HealthCheck.large_base_example])
SOME = settings(FEW, max_examples=80)
TINY = settings(FEW, max_examples=3)

# --- strategies ------------------------------------------------------------------------------------------

markers = st.sampled_from(MARKERS)
controls = st.text(st.characters(min_codepoint=0, max_codepoint=0x1F), min_size=1, max_size=8)
bidi = st.text(st.sampled_from(BIDI), min_size=1, max_size=6)
surrogates = st.sampled_from(["\ud800", "a\udfffb", "\udbff", "\udc00<x-hostile-\"'>"])
# Text for URLs and headers stays under the server's 8 KB line limit (a longer line is refused by the
# HTTP parser before any routing); bodies get the 100 KB strings.
nasty = st.one_of(
    markers, st.text(max_size=30), controls, bidi, surrogates,
    st.builds(lambda a, m, b: a + m + b, bidi | st.text(max_size=4), markers, controls | st.just("")),
    st.integers(300, 700).map(lambda n: ("\u202e<x-hostile-\"'>" * (n // 16 + 1))[:n]),
)
huge = st.integers(20_000, 100_000).map(lambda n: ("A\u202e<script>alert(1)</script>" * (n // 30 + 1))[:n])
nasty_or_huge = st.one_of(nasty, huge)
guidish = st.one_of(
    st.uuids().map(str), st.uuids().map(lambda u: "{" + str(u).upper() + "}"), st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: str(u)[:-1] + "g"), st.just("00000000-0000-0000-0000-000000000000"),
)
segment = st.one_of(
    guidish.map(enc), nasty.map(enc),
    st.sampled_from(["..", "%2e%2e", "%2F", "%00", "%ff", "%ED%A0%80", "x%0d%0aSet-Cookie:%20a=b", "%25",
                     "con", "~", "%5c..%5c", "%u2028"]),
)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.just(10**400), st.floats(allow_nan=False,
                        allow_infinity=False), nasty_or_huge)
json_value = st.recursive(json_scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.text(max_size=8) | markers, c, max_size=4), max_leaves=8)
DEEP_ARRAYS = "[" * 1500 + "]" * 1500
DEEP_OBJECTS = '{"a":' * 1500 + "1" + "}" * 1500
MALFORMED = [b"", b"{", b"{'a': 1}", b"[1,]", b"NaN", b'{"a": NaN}', b'{"a": Infinity}', b"\xff\xfe{}",
             b'{"a":1,"a":2}', b"null", b"1e99999", b'"\\ud800"', b"\x00", b'{"a":"\\ud800"}', b"{}" * 1000,
             DEEP_ARRAYS.encode(), DEEP_OBJECTS.encode(), "\ufeff{}".encode(), b'{"a":"\\u0000"}']
CONTENT_TYPES = ["application/json", "application/json; charset=utf-16", "text/plain", "text/html",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "APPLICATION/JSON",
                 "application/problem+json", "application/json;charset=\"<x-hostile-\"'>\""]
QUERY_NAMES = ["state", "tenant", "tenantId", "admin_consent", "error", "error_description", "continuation",
               "pageSize", "severity", "status", "includePayload", "purge", "code", "id", "name", "$filter"]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)


def body_strategy(fields: list[str], base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Bodies for a JSON route: malformed text, wrong types per field, 100 KB strings, 1,500-deep values,
    duplicated keys, lone surrogates, non-objects."""
    names = st.sampled_from(fields) if fields else st.just("name")

    def with_field(name: str, value: Any) -> bytes:
        return dumps({**base, name: value}).encode()

    def spliced(name: str, raw: str) -> bytes:
        return dumps({**base, name: "__RAW__"}).replace('"__RAW__"', raw).encode()

    return st.one_of(
        st.sampled_from(MALFORMED), st.binary(max_size=200),
        st.builds(with_field, names, json_value),
        st.builds(lambda f, v: dumps({**base, **v, f: base.get(f)}).encode(), names,
                  st.dictionaries(st.sampled_from(fields or ["x"]) | nasty, json_value, max_size=4)),
        st.builds(spliced, names, st.sampled_from([DEEP_ARRAYS, DEEP_OBJECTS, '"\\ud800"', '"\\udfff<x>"',
                                                   "1e99999", "-0", '"' + "A" * 100_000 + '"'])),
        st.builds(lambda f: (dumps(base)[:-1] + f', "{f}": 1, "{f}": 2}}').encode() if base
                  else f'{{"{f}": 1, "{f}": 2}}'.encode(), names),
        json_value.map(lambda v: dumps(v).encode()),
    )


def query_strategy(names: list[str]) -> st.SearchStrategy[str]:
    """A query string of hostile pairs, names repeated on purpose."""
    pair = st.tuples(st.sampled_from(names) | nasty, nasty | guidish)
    return st.lists(pair, max_size=3).flatmap(lambda pairs: st.just(pairs + pairs[:1])).map(
        lambda pairs: "&".join(f"{enc(n)}={enc(v)}" for n, v in pairs))


def headers_strategy() -> st.SearchStrategy[dict[str, bytes]]:
    names = st.sampled_from(["Accept", "If-Match", "X-Forwarded-Host", "X-Forwarded-For", "Origin", "Referer",
                             "X-Signature-SHA256", "X-Signature-Timestamp", "X-Hostile", "Cookie",
                             "Accept-Language", "X-Original-URL"])
    return st.dictionaries(names, nasty.map(header_value), max_size=4)


KEYS = st.sampled_from(["function", "query", "none", "wrong", "master"])

# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack_and_secret(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Onboarding, str]]:
    env, secret = start_hostile_stack(Path(tmp_path_factory.mktemp("hostile")))
    yield env, secret
    env.stack.stop()


@pytest.fixture(scope="module")
def env(stack_and_secret: tuple[Onboarding, str]) -> Onboarding:
    return stack_and_secret[0]


@pytest.fixture(scope="module")
def ledger(env: Onboarding) -> Ledger:
    assert env.stack.host is not None
    return Ledger(env.host_url, env.stack.host.master_key, env.stack.host.function_key)


def family_clean(ledger: Ledger, family: str) -> None:
    bad = [o for o in ledger.offences if o.family == family]
    assert not bad, f"{len(bad)} offending responses in {family}:\n{ledger.report(family)}"


def signed(env: Onboarding, body: bytes, at: float | None = None) -> dict[str, str]:
    """The webhook's signature headers (timestamped scheme, or the older body-only one)."""
    if hasattr(signing, "signature_headers"):
        return signing.signature_headers(env.webhook_secret, body, at)
    return {"X-Signature-SHA256": signing.sign(env.webhook_secret, body)}  # type: ignore[call-arg]


def invite(env: Onboarding, ledger: Ledger, name: str, tenant: str | None = None) -> tuple[str, str]:
    """A real invitation through the webhook: its consent URL and state."""
    body = dumps({"customerName": name, **({"tenantId": tenant} if tenant else {})}).encode()
    response = ledger.send("setup", "create_invitation", "POST", "/api/tenants", data=body,
                           headers={"Content-Type": "application/json", **signed(env, body)})
    assert response is not None and response.status_code == 201, response.text if response is not None else None
    url = response.json()["consentUrl"]
    return url, parse_qs(urlsplit(url).query)["state"][0]


def tenants_rows(env: Onboarding) -> dict[str, dict[str, Any]]:
    return {f"{r['PartitionKey']}/{r['RowKey']}": r for r in env.snapshot().get("Tenants", [])}


# --- the routes themselves -------------------------------------------------------------------------------


def test_routes_come_from_the_app_and_match_what_the_host_serves(env):
    assert env.stack.host is not None
    listed = {f["name"]: f for f in env.stack.host.admin("GET", "functions").json()}
    assert ROUTES, "the app registers no HTTP route"
    missing = {r.name for r in ROUTES} - set(listed)
    assert not missing, f"the host does not serve {missing}"


def test_platform_routes_refuse_the_function_key(ledger):
    paths = ["/admin/host/status", "/admin/functions", "/admin/functions/verify_tenants",
             "/runtime/webhooks/durabletask/instances", "/runtime/webhooks/durabletask/instances/x",
             "/runtime/webhooks/durabletask/orchestrators/notify_mssp"]
    for path in paths:
        for method in ("GET", "POST"):
            for key in ("function", "query", "none", "wrong"):
                # 401 where the platform serves the method, 404 where it does not: never an answer.
                response = ledger.send("platform", "platform", method, path, key=key)
                if response is not None and response.status_code not in (401, 404):
                    ledger.offend("auth", "platform", method, path, response.status_code,
                                  f"key={key}", response.text[:200])
    family_clean(ledger, "platform")


# --- consent state and tenant binding ----------------------------------------------------------------------


def _forged_tokens(env: Onboarding, secret: str, genuine: str, tenant: str, nonce: str) -> list[str]:
    """id_tokens for `tenant` and `nonce` that Entra never signed: none, HS256 with the app's secret, RS256
    with our own key under Entra's kid, a genuine signature under a changed payload, junk."""
    now = int(time.time())
    claims = {"aud": env.client_id, "iss": f"{env.stack.cloud.url}/{tenant}/v2.0", "tid": tenant,
              "nonce": nonce, "iat": now, "nbf": now, "exp": now + 3600, "ver": "2.0", "oid": str(uuid.uuid4()),
              "name": MARKERS[0]}
    kid = jwt.get_unverified_header(genuine)["kid"]
    own = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    head, _, sig = genuine.split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    return [
        f"{none_header}.{payload}.",
        jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid}),
        jwt.encode(claims, own, algorithm="RS256", headers={"kid": kid}),
        jwt.encode(claims, own, algorithm="RS256", headers={"kid": "hostile"}),
        f"{head}.{payload}.{sig}",
        f"{head}.{payload}",
        jwt.encode({**claims, "aud": [env.client_id, "other"]}, own, algorithm="RS256", headers={"kid": kid}),
        "a.b.c", "..", "", "eyJ" * 20_000, MARKERS[1],
    ]


def test_consent_state_and_tenant_binding_attacks_change_no_tenant(env, stack_and_secret, ledger):
    family = "consent"
    secret = stack_and_secret[1]

    def get(query: str) -> Any:
        return ledger.send(family, "consent_callback", "GET", CALLBACK, query=query, key="none")

    def post(fields: dict[str, str] | None = None, raw: bytes | None = None,
             content_type: str = "application/x-www-form-urlencoded") -> Any:
        data = raw if raw is not None else urlencode(fields or {}).encode("utf-8", "surrogatepass")
        return ledger.send(family, "consent_sign_in", "POST", CALLBACK, data=data, key="none",
                           headers={"Content-Type": content_type})

    # A genuine onboarding of tenant A through invitation 1: the row every attack below must leave alone.
    url1, s1 = invite(env, ledger, "Fabrikam " + MARKERS[0])
    tenant_a = env.new_tenant(name="A " + MARKERS[1])
    legit_query = urlsplit(env.answer_consent(url1, tenant=tenant_a)).query
    redirect = get(legit_query)
    assert redirect is not None and redirect.status_code == 302, redirect.text if redirect is not None else None
    legit_fields = env.sign_in_fields(redirect.headers["Location"], as_tenant=tenant_a)
    accepted = post(legit_fields)
    assert accepted is not None and accepted.status_code == 200, accepted.text[:300] if accepted is not None else None
    genuine = legit_fields["id_token"]

    # Invitation 2 claims the bound tenant A; 3 names tenant B; 4 claims D; 5 is left for hypothesis.
    _, s2 = invite(env, ledger, "Northwind " + MARKERS[2])
    tenant_b, tenant_d, tenant_e = env.new_tenant(), env.new_tenant(), env.new_tenant()
    _, s3 = invite(env, ledger, "Tailspin " + MARKERS[0], tenant=tenant_b)
    _, s4 = invite(env, ledger, "Litware " + MARKERS[1])
    _, s5 = invite(env, ledger, "Adatum " + MARKERS[0])
    before = tenants_rows(env)
    assert f"tenant/{tenant_a}" in before

    claim2 = get(urlencode({"admin_consent": "True", "tenant": tenant_a, "state": s2}))
    claim4 = get(urlencode({"admin_consent": "True", "tenant": tenant_d, "state": s4}))
    assert claim2 is not None and claim2.status_code == 302 and claim4 is not None and claim4.status_code == 302
    url2, url4 = claim2.headers["Location"], claim4.headers["Location"]
    nonce4 = parse_qs(urlsplit(url4).query)["nonce"][0]

    # Replays of the genuine answers, and the genuine answers with something swapped.
    get(legit_query)
    for tenant in (tenant_d, "not-a-guid", tenant_a.upper(), MARKERS[0]):
        get(legit_query.replace(tenant_a, enc(tenant)))
    get(legit_query + "&tenant=" + tenant_d)
    get(legit_query.replace("admin_consent=True", "error=access_denied"))
    post(legit_fields)
    post({**legit_fields, "state": s2})
    post({**legit_fields, "state": s4})
    post({**legit_fields, "state": s3})
    post(raw=urlencode(legit_fields).encode() + b"&state=" + s4.encode())
    post(legit_fields, content_type="application/json")
    # A real admin of A signing in through another invitation must not take A over.
    try:
        post(env.sign_in_fields(url2, as_tenant=tenant_a))
    except OnboardingError as exc:
        logger.info("the cloud refused the sign-in of A through invitation 2: %s", exc)
    # Signed in to E (D's sign-in request sent to E's authority) while the redirect claimed D.
    try:
        post(env.sign_in_fields(url4.replace(f"/{tenant_d}/", f"/{tenant_e}/"), as_tenant=tenant_e))
    except OnboardingError as exc:
        logger.info("the cloud refused a sign-in to E with D's request: %s", exc)
    # Tokens of D the cloud damages on purpose (foreign key, audience, expiry, nonce, issuer).
    for kind in ("foreign_key", "wrong_audience", "expired", "wrong_nonce", "wrong_issuer"):
        fault = env.stack.cloud.control("POST", f"tenants/{tenant_d}/faults",
                                        json={"kind": f"id_token_{kind}", "count": 1})
        assert fault.status_code == 201, fault.text
        post(env.sign_in_fields(url4, as_tenant=tenant_d))
    forged = _forged_tokens(env, secret, genuine, tenant_d, nonce4)
    for token in forged:
        post({"state": s4, "id_token": token})
    # The invited tenant B only: any other tenant, and sign-ins the redirect never asked for.
    for tenant in (tenant_a, tenant_d, str(uuid.uuid4()), MSSP_TENANT, "organizations", MARKERS[0]):
        get(urlencode({"admin_consent": "True", "tenant": tenant, "state": s3}))
    post({"state": s3, "id_token": forged[2]})
    # The stored hash of a state is not a state.
    get(urlencode({"admin_consent": "True", "tenant": tenant_d,
                   "state": hashlib.sha256(s4.encode()).hexdigest()}))

    states = [s1, s2, s3, s4, s5]
    state = st.one_of(
        st.sampled_from(states),
        st.tuples(st.sampled_from(states), st.integers(0, 42), st.sampled_from("AZaz09-_=")).map(
            lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + 1:]),
        st.sampled_from(states).map(lambda s: s + "="), st.sampled_from(states).map(lambda s: s.upper()),
        st.sampled_from(states).map(lambda s: " " + s), st.sampled_from(states).map(lambda s: s + "\u202e"),
        st.binary(min_size=32, max_size=32).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
        nasty,
    )
    tenant = st.one_of(st.uuids().map(str), st.sampled_from([tenant_a, tenant_d, tenant_e, MSSP_TENANT,
                                                             "common", "organizations", tenant_a.upper(),
                                                             "{" + tenant_d + "}"]), nasty)
    consent_flag = st.sampled_from(["True", "true", "False", "", "1", MARKERS[0]])
    extra = st.lists(st.tuples(st.sampled_from(["error", "error_description", "state", "tenant", "scope",
                                                "admin_consent", "id_token"]), nasty), max_size=3)
    tokens = st.sampled_from(forged) | nasty_or_huge | st.builds(
        lambda a, b, c: f"{a}.{b}.{c}", st.text(max_size=20), st.text(max_size=20), st.text(max_size=20))

    @SOME
    @given(state=state, tenant=tenant, flag=consent_flag, extra=extra, token=tokens, as_post=st.booleans(),
           content_type=st.sampled_from(["application/x-www-form-urlencoded"] * 4 + CONTENT_TYPES))
    def attack(state, tenant, flag, extra, token, as_post, content_type):
        if tenant == tenant_b and state == s3:
            tenant = tenant_d  # the one redirect that may bind: the invited tenant itself
        pairs = [("state", state), *extra]
        if as_post:
            post(raw="&".join(f"{enc(n)}={enc(v)}" for n, v in [*pairs, ("id_token", token)]).encode(),
                 content_type=content_type)
        else:
            get("&".join(f"{enc(n)}={enc(v)}" for n, v in [("admin_consent", flag), ("tenant", tenant), *pairs]))

    attack()

    after = tenants_rows(env)
    roles = {tenant_a: "A (bound to invitation 1)", tenant_b: "B (invited by 3)", tenant_d: "D (claimed by 4)",
             tenant_e: "E"}
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            role = next((r for t, r in roles.items() if t in key), "another tenant")
            ledger.offend("binding", family, "GET/POST", CALLBACK, 0, f"Tenants row {key}: tenant {role}",
                          f"before={json.dumps(before.get(key), default=str)[:90]} "
                          f"after={json.dumps(after.get(key), default=str)[:90]}")
    family_clean(ledger, family)


# --- every route, generically ------------------------------------------------------------------------------

BODY_FIELDS = {
    "create_invitation": ["customerName", "tenantId", "externalId", "contactEmail", "alertSource", "callbackUrl",
                          "rules"],
    "patch_tenant": ["displayName", "alertSource", "apiHost", "disabled"],
    "create_notification_rule": ["name", "enabled", "scope", "severities", "deviceGroups", "recipients", "mode",
                                 "includeOrganizationName", "includeTenantLink", "includeDeviceInformation",
                                 "notifyOnSeverityRise", "id"],
}
BODY_FIELDS["replace_notification_rule"] = BODY_FIELDS["change_notification_rule"] = \
    BODY_FIELDS["create_notification_rule"]
BASE_BODIES = {
    "create_invitation": {"customerName": "Contoso"},
    "patch_tenant": {"displayName": "Contoso"},
    "create_notification_rule": {"name": "hostile", "recipients": ["soc@mssp.example"]},
}


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_generic_attacks_on_every_route(route: Route, env, ledger):
    """Hostile path segments, repeated query parameters, header values and bodies, with and without keys."""
    family = f"generic:{route.name}"
    names = QUERY_NAMES + route.params
    bodies = body_strategy(BODY_FIELDS.get(route.name, ["name", "id"]), BASE_BODIES.get(route.name, {}))
    budget = TINY if route.name == "test_notification_rule" else FEW

    @budget
    @given(values=st.fixed_dictionaries({p: segment for p in route.params}), query=query_strategy(names),
           headers=headers_strategy(), key=KEYS, method=st.sampled_from(route.methods), body=bodies,
           content_type=st.sampled_from(CONTENT_TYPES))
    def attack(values, query, headers, key, method, body, content_type):
        data = body if method in BODY_METHODS else None
        if data is not None:
            headers = {**headers, "Content-Type": content_type.encode()}
        ledger.send(family, route.name, method, route.path(values), query=query, headers=headers, data=data,
                    key=key, auth_level=route.auth_level)

    attack()
    family_clean(ledger, family)


def test_wrong_methods_on_every_route_are_refused_without_a_5xx(ledger):
    family = "methods"
    served: dict[str, set[str]] = {}
    for route in ROUTES:
        served.setdefault(route.template.lower(), set()).update(route.methods)
    for route in ROUTES:
        path = route.path({p: str(uuid.uuid4()) for p in route.params})
        # Only methods the HTTP parser knows: an unknown token is refused before any routing. No body on
        # methods the server does not read one for (it would stay on the connection as the next request).
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND"):
            if method in served[route.template.lower()]:
                continue
            for key in ("function", "none"):
                response = ledger.send(family, route.name, method, path, key=key,
                                       data=b"{}" if method in BODY_METHODS else None)
                if response is not None and response.status_code not in (401, 404, 405):
                    ledger.offend("auth", family, method, path, response.status_code, f"key={key}",
                                  response.text[:200])
    family_clean(ledger, family)


# --- the onboarding webhook ------------------------------------------------------------------------------------


def test_webhook_signed_hostile_bodies(env, ledger):
    """Signed correctly, so every body reaches the JSON and field validation."""
    family = "webhook"

    @SOME
    @given(body=body_strategy(BODY_FIELDS["create_invitation"], BASE_BODIES["create_invitation"]),
           content_type=st.sampled_from(["application/json"] * 5 + CONTENT_TYPES))
    def attack(body, content_type):
        ledger.send(family, "create_invitation", "POST", "/api/tenants", data=body, auth_level="function",
                    headers={"Content-Type": content_type, **signed(env, body)})

    attack()
    family_clean(ledger, family)


UNSAFE_CALLBACKS = [
    "http://example.com/cb", "https://127.0.0.1/cb", "https://localhost/cb", "https://[::1]/cb",
    "https://10.1.2.3/cb", "https://169.254.169.254/latest/meta-data/", "https://192.168.0.1/cb",
    "https://172.16.0.1/cb", "https://0.0.0.0/cb", "https://100.64.0.1/cb", "https://[::ffff:127.0.0.1]/cb",
    "https://[fd00::1]/cb", "https://[fe80::1]/cb", "https://metadata.google.internal/cb",
    "https://user:pass@example.com/cb", "https://example.com:0/cb", "https://127.1/cb", "https://0x7f000001/cb",
    "https://2130706433/cb", "https://017700000001/cb", "https://0x7f.0.0.1/cb", "https://127.0.0.1./cb",
    "https://LOCALHOST/cb", "https://localhost./cb", "https://foo.localhost/cb", "https://[0:0:0:0:0:0:0:1]/cb",
    "https://example.com\t.evil/cb", "javascript:alert(1)", "file:///etc/passwd", "https://" + "a" * 3000 + ".com",
    "https://224.0.0.1/cb", "https://255.255.255.255/cb", "https://[::]/cb", "https://192.0.0.1/cb",
]


def test_webhook_refuses_callback_urls_to_private_or_odd_hosts(env, ledger):
    family = "callbackUrl"
    for url in UNSAFE_CALLBACKS:
        body = dumps({"customerName": "Contoso", "callbackUrl": url}).encode()
        response = ledger.send(family, "create_invitation", "POST", "/api/tenants", data=body,
                               headers={"Content-Type": "application/json", **signed(env, body)})
        if response is not None and response.status_code < 300:
            ledger.offend("unsafe-url", family, "POST", "/api/tenants", response.status_code, f"callbackUrl={url}",
                          response.text[:200])
    family_clean(ledger, family)


def test_webhook_refuses_replayed_and_stale_signatures(env, ledger):
    family = "replay"
    body = dumps({"customerName": "Replay " + MARKERS[0]}).encode()
    headers = {"Content-Type": "application/json", **signed(env, body)}
    first = ledger.send(family, "create_invitation", "POST", "/api/tenants", data=body, headers=headers)
    assert first is not None and first.status_code == 201, first.text if first is not None else None
    for attempt in (headers, {**headers, "X-Signature-SHA256": headers.get("X-Signature-SHA256", "").upper()},
                    {**headers, "X-Signature-SHA256": headers.get("X-Signature-SHA256", "") + " "}):
        again = ledger.send(family, "create_invitation", "POST", "/api/tenants", data=body, headers=attempt)
        if again is not None and again.status_code < 300:
            ledger.offend("replay", family, "POST", "/api/tenants", again.status_code, "the same signed request",
                          again.text[:200])
    if hasattr(signing, "signature_headers"):
        for skew in (-3600, -301, 301, 10**9):
            stale = dumps({"customerName": f"Stale {skew}"}).encode()
            response = ledger.send(family, "create_invitation", "POST", "/api/tenants", data=stale,
                                   headers={"Content-Type": "application/json",
                                            **signed(env, stale, time.time() + skew)})
            if response is not None and response.status_code != 401:
                ledger.offend("replay", family, "POST", "/api/tenants", response.status_code,
                              f"signed {skew} s away", response.text[:200])
    family_clean(ledger, family)


def test_stored_customer_names_are_escaped_on_consent_pages(env, ledger):
    """A hostile customerName comes back on the admin's page: escaped, whatever the outcome."""
    family = "stored"
    for marker in MARKERS:
        _, state = invite(env, ledger, f"Evil {marker} Corp")
        for query in ({"state": state, "admin_consent": "True", "tenant": "x"},
                      {"state": state, "error": "access_denied", "error_description": marker},
                      {"state": state, "error": "access_denied", "error_description": marker}):
            ledger.send(family, "consent_callback", "GET", CALLBACK, query=urlencode(query), key="none")
    family_clean(ledger, family)


# --- the SIEM pull API -------------------------------------------------------------------------------------------


def test_siem_forged_continuation_tokens(env, ledger):
    family = "siem"
    key = str(env.stack.settings["SIEM_TOKEN_KEY"]).encode()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    def mac(signed_text: str, with_key: bytes) -> str:
        context = getattr(siem_token, "_CONTEXT", b"")
        return b64(hmac.new(with_key, context + signed_text.encode(), hashlib.sha256).digest())

    first = ledger.send(family, "list_alerts", "GET", "/api/alerts", query="pageSize=1")
    assert first is not None and first.status_code == 200, first.text[:300] if first is not None else None
    issued = first.json().get("continuation") or first.json().get("nextContinuation") or ""

    payloads = st.one_of(
        st.sampled_from([DEEP_ARRAYS, DEEP_OBJECTS, "[" * 5 + "]" * 5, '{"f":{"t":null,"sev":[["x"]],"st":[]},'
                         '"p":["","",null]}', '{"f":{"t":null,"sev":[],"st":[]},"p":["","",1e999]}',
                         '{"f":{"t":null,"sev":[],"st":[]},"p":["202601010000","x",true]}',
                         '{"f":{"t":{"a":1},"sev":{},"st":"new"},"p":{}}', '{"f":1,"f":2}', "NaN", "\ud800"]),
        json_value.map(dumps),
        st.builds(lambda f, p: dumps({"f": f, "p": p}), json_value, json_value),
    )
    forged = st.one_of(
        st.builds(lambda p: f"2.{b64(p.encode('utf-8', 'surrogatepass'))}.{mac('2.' + b64(p.encode('utf-8', 'surrogatepass')), key)}", payloads),  # noqa: E501
        st.builds(lambda p: f"2.{b64(p.encode('utf-8', 'surrogatepass'))}.{b64(secrets.token_bytes(32))}", payloads),
        st.builds(lambda p: f"1.{b64(p.encode('utf-8', 'surrogatepass'))}.{mac('1.' + b64(p.encode('utf-8', 'surrogatepass')), key)}", payloads),  # noqa: E501
        payloads.map(lambda p: b64(p.encode("utf-8", "surrogatepass"))),
        payloads.map(lambda p: base64.b64encode(p.encode("utf-8", "surrogatepass")).decode()),
        st.tuples(st.integers(0, max(len(issued) - 1, 0)), st.characters(codec="ascii")).map(
            lambda t: issued[:t[0]] + t[1] + issued[t[0] + 1:]),
        st.integers(0, len(issued)).map(lambda n: issued[:n]),
        st.just(issued + "," + issued), nasty,
        st.integers(1025, 6000).map(lambda n: ("2." + "A" * n + "." + "B" * 43)),
    )
    extra = st.lists(st.tuples(st.sampled_from(["tenantId", "severity", "status", "pageSize", "includePayload",
                                                "continuation"]), nasty | guidish | st.sampled_from(
                                                    ["high", "new", "1000", "1001", "-1", "true", "0"])), max_size=3)
    accept = st.sampled_from(["application/json", "application/x-ndjson", "*/*;q=0.5", "text/html",
                              "application/json;q=2", "application/json;q=nan", ""]) | nasty

    @SOME
    @given(token=forged, extra=extra, accept=accept)
    def attack(token, extra, accept):
        query = "&".join(f"{enc(n)}={enc(v)}" for n, v in [("continuation", token), *extra])
        ledger.send(family, "list_alerts", "GET", "/api/alerts", query=query,
                    headers={"Accept": header_value(accept)}, auth_level="function")

    attack()
    family_clean(ledger, family)


# --- notification rules and tenant management ------------------------------------------------------------------


def test_rule_bodies_and_test_email(env, ledger):
    family = "rules"
    created = ledger.send(family, "create_notification_rule", "POST", "/api/notification-rules",
                          data=dumps({"name": "Hostile " + MARKERS[0], "recipients": ["soc@mssp.example"],
                                      "scope": {"tenants": [str(uuid.uuid4())]}}).encode(),
                          headers={"Content-Type": "application/json"})
    assert created is not None and created.status_code == 201, created.text if created is not None else None
    rule_id = created.json()["id"]
    path = f"/api/notification-rules/{rule_id}"
    base = BASE_BODIES["create_notification_rule"]

    @SOME
    @given(method=st.sampled_from(["POST", "PUT", "PATCH"]), body=body_strategy(
        BODY_FIELDS["create_notification_rule"], base), if_match=st.none() | nasty.map(header_value))
    def attack(method, body, if_match):
        headers: dict[str, Any] = {"Content-Type": "application/json"}
        if if_match is not None:
            headers["If-Match"] = if_match
        target = "/api/notification-rules" if method == "POST" else path
        name = {"POST": "create_notification_rule", "PUT": "replace_notification_rule",
                "PATCH": "change_notification_rule"}[method]
        ledger.send(family, name, method, target, data=body, headers=headers, auth_level="function")

    attack()
    # The test e-mail really goes out through MailDev: a handful of hostile calls only.
    mail_rule = ledger.send(family, "create_notification_rule", "POST", "/api/notification-rules",
                            data=dumps({"name": "Mail " + MARKERS[1], "recipients": ["soc@mssp.example"]}).encode(),
                            headers={"Content-Type": "application/json"})
    assert mail_rule is not None and mail_rule.status_code == 201, mail_rule.text if mail_rule is not None else None

    @TINY
    @given(query=query_strategy(QUERY_NAMES), headers=headers_strategy())
    def mail(query, headers):
        ledger.send(family, "test_notification_rule", "POST",
                    f"/api/notification-rules/{mail_rule.json()['id']}/test", query=query, headers=headers,
                    data=b"{}", auth_level="function")

    mail()
    family_clean(ledger, family)


def test_tenant_management_bodies_and_parameters(env, ledger):
    family = "management"
    tenant_id = str(uuid.uuid4())
    env.tables().create_table_if_not_exists("Tenants").upsert_entity(
        {"PartitionKey": "tenant", "RowKey": tenant_id, "status": "active", "displayName": "Managed " + MARKERS[0],
         "alertSource": "graph", "invitationId": "0" * 32})

    @SOME
    @given(body=body_strategy(BODY_FIELDS["patch_tenant"], BASE_BODIES["patch_tenant"]),
           purge=nasty | st.sampled_from(["true", "false", "TRUE", "true,true", ""]),
           which=st.sampled_from(["patch", "get", "purge", "consent", "delete"]))
    def attack(body, purge, which):
        path = f"/api/tenants/{tenant_id}"
        if which == "patch":
            ledger.send(family, "patch_tenant", "PATCH", path, data=body,
                        headers={"Content-Type": "application/json"}, auth_level="function")
        elif which == "get":
            ledger.send(family, "get_tenant", "GET", path, query=f"x={enc(purge)}", auth_level="function")
        elif which == "purge":
            ledger.send(family, "get_tenant_purge", "GET", path + "/purge", auth_level="function")
        elif which == "consent":
            ledger.send(family, "fresh_consent", "POST", path + "/consent", data=body, auth_level="function")
        else:  # an unknown tenant: the managed one stays for the other draws
            ledger.send(family, "offboard_tenant", "DELETE", f"/api/tenants/{uuid.uuid4()}",
                        query=f"purge={enc(purge)}&purge=true", auth_level="function")

    attack()
    ledger.send(family, "list_tenants", "GET", "/api/tenants", auth_level="function")
    family_clean(ledger, family)


# --- the tally -------------------------------------------------------------------------------------------------


def test_every_route_was_attacked_and_nothing_broke(ledger, tmp_path_factory):
    summary = ledger.summary()
    print(f"\n{summary}")  # noqa: T201 - the one line `pytest -s` shows
    logger.warning("%s", summary)
    out = tmp_path_factory.getbasetemp() / "hostile-summary.txt"
    statuses = "\n".join(f"{name}: {count}" for name, count in sorted(ledger.statuses.items()))
    out.write_text(f"{summary}\n{ledger.report()}\n\nstatuses by family:\n{statuses}\n")
    unattacked = [r.name for r in ROUTES if ledger.hits[r.name] < 10]
    assert not unattacked, f"routes not attacked: {unattacked}"
    assert ledger.sent > 0
    assert not ledger.offences, f"{summary}\n{ledger.report()}"
