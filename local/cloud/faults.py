"""Per-tenant faults and the real APIs' rate limits, switchable at run time through the control API.

A fault applies to the requests of one tenant (the path tenant for token requests, the token's `tid`
for API calls), optionally to one API and to the next N requests only. The server asks for a
`FaultPlan` once per request and carries it out: latency first, then at most one replacing response
(429/500/503/403/dropped connection), then at most one damage to the body it would have sent.
The `id_token_*` kinds apply to the sign-in endpoint only (api `signin`, the tenant signing in): the
id_token it posts back is forged, for another app, expired, for another nonce, names another tenant's
issuer, is a user without an admin role, or a guest from another tenant, so that an app's
rejection of each can be tested end to end.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

APIS = ("token", "graph", "defender", "mail")

# kind -> APIs it can apply to; the aliases let callers name the HTTP status instead.
KINDS: dict[str, frozenset[str]] = {
    "throttle": frozenset(APIS),
    "server_error": frozenset(APIS),
    "unavailable": frozenset(APIS),
    "latency": frozenset(APIS),
    "drop_connection": frozenset(APIS),
    "truncated_json": frozenset(APIS),
    "malformed_json": frozenset(APIS),
    "consent_revoked": frozenset({"token"}),
    "permission_removed": frozenset(APIS),
    "feature_disabled": frozenset({"graph", "defender"}),
}
# Damage to the id_token the sign-in endpoint issues (local.cloud.signin); never applies to other APIs.
ID_TOKEN_KINDS = frozenset({"id_token_foreign_key", "id_token_wrong_audience", "id_token_expired",
                            "id_token_wrong_nonce", "id_token_wrong_issuer", "id_token_not_admin",
                            "id_token_guest"})
KINDS.update({kind: frozenset({"signin"}) for kind in ID_TOKEN_KINDS})
KIND_ALIASES = {"429": "throttle", "500": "server_error", "503": "unavailable"}
RESPONSE_KINDS = frozenset({"throttle", "server_error", "unavailable", "drop_connection", "feature_disabled"})
BODY_KINDS = frozenset({"truncated_json", "malformed_json"})

# (limit, window seconds) per API: Defender 100/min and 1,500/h, Graph security 150/min
# (docs/MICROSOFT.md, "API tokens, limits and errors").
RATE_LIMITS: dict[str, tuple[tuple[int, float], ...]] = {
    "defender": ((100, 60.0), (1500, 3600.0)),
    "graph": ((150, 60.0),),
}

_fault_ids = itertools.count(1)


@dataclass
class Fault:
    kind: str
    api: str | None = None
    remaining: int | None = None  # None: until cleared
    retry_after: int = 10
    latency_ms: int = 0
    id: int = field(default_factory=lambda: next(_fault_ids))

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Fault:
        kind = KIND_ALIASES.get(str(body.get("kind")), str(body.get("kind")))
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {body.get('kind')!r}; one of {sorted(KINDS)}")
        api = body.get("api")
        if api is not None and api not in KINDS[kind]:
            raise ValueError(f"fault {kind} cannot apply to api {api!r}; one of {sorted(KINDS[kind])}")
        count = body.get("count")
        if count is not None and int(count) < 1:
            raise ValueError("count must be at least 1")
        fault = cls(kind=kind, api=api, remaining=None if count is None else int(count),
                    retry_after=int(body.get("retryAfter", 10)), latency_ms=int(body.get("latencyMs", 0)))
        if kind == "latency" and fault.latency_ms <= 0:
            raise ValueError("a latency fault needs latencyMs > 0")
        return fault

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "api": self.api, "remaining": self.remaining,
                "retryAfter": self.retry_after, "latencyMs": self.latency_ms}

    def applies_to(self, api: str) -> bool:
        return api in KINDS[self.kind] and (self.api is None or self.api == api)


@dataclass
class FaultPlan:
    latency_ms: int = 0
    response: Fault | None = None
    body: Fault | None = None
    consent_revoked: bool = False
    permission_removed: bool = False
    id_token: set[str] = field(default_factory=set)  # ID_TOKEN_KINDS to apply to the issued id_token

    def kinds(self) -> list[str]:
        served = [f.kind for f in (self.response, self.body) if f] + sorted(self.id_token)
        if self.latency_ms:
            served.append("latency")
        if self.consent_revoked:
            served.append("consent_revoked")
        if self.permission_removed:
            served.append("permission_removed")
        return served


class FaultBoard:
    """The active faults of every tenant."""

    def __init__(self) -> None:
        self._faults: dict[str, list[Fault]] = {}

    def add(self, tenant_id: str, fault: Fault) -> Fault:
        self._faults.setdefault(tenant_id, []).append(fault)
        return fault

    def active(self, tenant_id: str) -> list[Fault]:
        return list(self._faults.get(tenant_id, []))

    def clear(self, tenant_id: str, fault_id: int | None = None) -> int:
        faults = self._faults.get(tenant_id, [])
        kept = [f for f in faults if fault_id is not None and f.id != fault_id]
        self._faults[tenant_id] = kept
        return len(faults) - len(kept)

    def plan(self, tenant_id: str, api: str) -> FaultPlan:
        """Consume the faults that apply to one request of `api` for this tenant."""
        plan = FaultPlan()
        faults = self._faults.get(tenant_id)
        if not faults:
            return plan
        used: list[Fault] = []
        for fault in faults:
            if not fault.applies_to(api):
                continue
            if fault.kind == "latency":
                plan.latency_ms += fault.latency_ms
            elif fault.kind == "consent_revoked":
                plan.consent_revoked = True
            elif fault.kind == "permission_removed":
                plan.permission_removed = True
            elif fault.kind in ID_TOKEN_KINDS:
                plan.id_token.add(fault.kind)
            elif fault.kind in RESPONSE_KINDS:
                if plan.response is not None:
                    continue
                plan.response = fault
            elif fault.kind in BODY_KINDS:
                if plan.body is not None:
                    continue
                plan.body = fault
            used.append(fault)
        for fault in used:
            if fault.remaining is not None:
                fault.remaining -= 1
        self._faults[tenant_id] = [f for f in faults if f.remaining is None or f.remaining > 0]
        return plan


class RateLimiter:
    """Sliding-window call limits per tenant and API, as the real services enforce them."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], deque[float]] = {}

    def admit(self, tenant_id: str, api: str, now: float | None = None) -> int | None:
        """Record a call and return None, or return the Retry-After seconds when over a limit."""
        limits = RATE_LIMITS.get(api)
        if not limits:
            return None
        now = time.monotonic() if now is None else now
        calls = self._calls.setdefault((tenant_id, api), deque())
        longest = max(window for _, window in limits)
        while calls and calls[0] <= now - longest:
            calls.popleft()
        wait = 0.0
        for limit, window in limits:
            recent = [t for t in itertools.islice(reversed(calls), limit) if t > now - window]
            if len(recent) >= limit:
                # The oldest of the last `limit` calls leaves the window first and frees a slot.
                wait = max(wait, recent[-1] + window - now)
        if wait > 0:
            return max(1, math.ceil(wait))
        calls.append(now)
        return None


class Stats:
    """Request counts for ground truth: token requests, API calls, throttling and faults served."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.token_requests: dict[str, dict[str, int]] = {}
        self.tokens_issued: dict[str, dict[str, int]] = {}
        self.api_requests: dict[str, dict[str, int]] = {}
        self.throttled: dict[str, dict[str, int]] = {}
        self.faults_served: dict[str, dict[str, int]] = {}

    @staticmethod
    def _bump(table: dict[str, dict[str, int]], outer: str, inner: str) -> None:
        row = table.setdefault(outer, {})
        row[inner] = row.get(inner, 0) + 1

    def token_request(self, tenant_id: str, client_id: str) -> None:
        self._bump(self.token_requests, tenant_id, client_id or "(none)")

    def token_issued(self, tenant_id: str, client_id: str) -> None:
        self._bump(self.tokens_issued, tenant_id, client_id)

    def api_request(self, tenant_id: str, api: str) -> None:
        self._bump(self.api_requests, tenant_id, api)

    def throttle(self, tenant_id: str, api: str) -> None:
        self._bump(self.throttled, tenant_id, api)

    def served(self, tenant_id: str, api: str, plan: FaultPlan) -> None:
        """Count the faults a request is about to be served; an injected 429 counts as throttled too."""
        for kind in plan.kinds():
            self._bump(self.faults_served, tenant_id, kind)
            if kind == "throttle":
                self.throttle(tenant_id, api)

    def to_json(self) -> dict[str, Any]:
        by_client: dict[str, int] = {}
        for row in self.token_requests.values():
            for client, count in row.items():
                by_client[client] = by_client.get(client, 0) + count
        return {
            "tokenRequests": {
                "total": sum(by_client.values()),
                "byTenant": {t: sum(r.values()) for t, r in self.token_requests.items()},
                "byClient": by_client,
                "byTenantAndClient": self.token_requests,
            },
            "tokensIssued": self.tokens_issued,
            "apiRequests": self.api_requests,
            "throttled": self.throttled,
            "faultsServed": self.faults_served,
        }
