"""The published API contract holds: docs/openapi.json is what the models make and what the app serves, and
requests generated from it (schemathesis, valid and invalid ones, for every documented operation) get no
5xx and only documented statuses, media types and bodies that conform to their schemas.

The app runs on the local host (the stack of tests/test_hostile.py, with the webhook secret set): generated
webhook requests are signed by `_send` (all but a few, so the documented 401 is exercised too). The consent
callback's two routes answer text/html pages for a browser: documented, not generated.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from local.openapi import TARGET
from shared.openapi import HTML, OPERATIONS, document_text
from shared.signing import signature_headers
from tests.grant_access.conftest import Onboarding
from tests.hostile_support import start_hostile_stack

logger = logging.getLogger(__name__)

EXAMPLES = 25  # per operation and generation mode: keeps the whole test near a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
GENERATED = [op for op in OPERATIONS if op.media != HTML]


def test_the_committed_document_is_what_the_models_make():
    assert TARGET.read_text(encoding="utf-8") == document_text(), "run: python -m local.openapi"


def test_every_route_of_the_app_is_documented():
    registered = _registered_routes()
    documented = {(op.path.lstrip("/"), op.method.upper()) for op in OPERATIONS}
    assert documented == registered


def _registered_routes() -> set[tuple[str, str]]:
    from tests.hostile_support import http_routes

    return {(route.template, method) for route in http_routes() for method in route.methods}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Onboarding]:
    onboarding, _ = start_hostile_stack(Path(tmp_path_factory.mktemp("contract")))
    yield onboarding
    onboarding.stack.stop()


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.server_errors = 0
        self.statuses: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.examples: list[str] = []

    def summary(self) -> str:
        return (f"contract: {self.sent} requests, {self.server_errors} responses >= 500, "
                f"{sum(self.violations.values())} schema violations ({dict(self.violations) or 'none'})")


def _send(env: Onboarding, session: requests.Session, case: Any, tally: Tally, signed_ops: Counter[str]) -> None:
    kwargs = case.as_transport_kwargs(base_url=f"{env.host_url}/api", headers={"x-functions-key": env.key})
    headers = dict(kwargs.pop("headers", {}) or {})
    if "json" in kwargs:
        kwargs["data"] = json.dumps(kwargs.pop("json")).encode()
        headers.setdefault("Content-Type", "application/json")
    if case.operation.definition.raw.get("operationId") == "create_invitation":
        body = kwargs.get("data") or b""
        body = body if isinstance(body, bytes) else str(body).encode()
        # Sign four requests in five: the fifth keeps whatever signature headers were generated (a 401).
        if int(hashlib.sha256(body).hexdigest(), 16) % 5:
            signed_ops["signed"] += 1
            headers.update(signature_headers(env.webhook_secret, body))
        else:
            signed_ops["unsigned"] += 1
    kwargs["headers"] = headers
    try:
        response = session.request(timeout=60, allow_redirects=False, **kwargs)
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeEncodeError, ValueError):
        return  # a generated value no HTTP client can send (a control character in a header): never reached us
    tally.sent += 1
    tally.statuses[f"{case.operation.label} {response.status_code}"] += 1
    if response.status_code >= 500:
        tally.server_errors += 1
    if response.status_code == 404 and response.headers.get("Content-Type", "").startswith("text/plain"):
        # No function matched the path (a generated segment the host's router does not take, such as one
        # holding a line break): the Functions host's own 404, before the app; the contract is the app's.
        tally.statuses["host router 404"] += 1
        return
    try:
        case.validate_response(response, checks=CHECKS, headers=headers, transport_kwargs=kwargs)
    except Exception as exc:  # schemathesis raises a group of failures: count them all, keep going
        failures = getattr(exc, "exceptions", [exc])
        for failure in failures:
            tally.violations[type(failure).__name__] += 1
        if len(tally.examples) < 10:
            tally.examples.append(f"{case.operation.label} -> {response.status_code}: {str(exc)[:600]}")


@pytest.mark.slow
def test_generated_requests_get_documented_answers_and_never_a_5xx(env: Onboarding):
    served = requests.get(f"{env.host_url}/api/openapi.json", headers={"x-functions-key": env.key}, timeout=30)
    assert served.status_code == 200 and served.text == document_text()
    schema = schemathesis.openapi.from_dict(served.json())
    tally, signed_ops = Tally(), Counter[str]()
    session = requests.Session()
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), "the document has an invalid operation"
    operations = {op.label: op for op in (result.ok() for result in results if isinstance(result, Ok))}
    generated = {f"{op.method.upper()} {op.path}" for op in GENERATED}
    assert generated <= set(operations), generated - set(operations)
    for label in sorted(generated):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operations[label].as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                _send(env, session, case, tally, signed_ops)

            try:
                call()
            except Unsatisfiable:  # nothing of this operation can be made invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, label
    summary = tally.summary()
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(tally.statuses.items()))
    print(f"\n{summary}\nwebhook requests signed/unsigned: {dict(signed_ops)}\nstatuses: {statuses}")  # noqa: T201
    logger.warning("%s", summary)
    assert tally.sent > 0
    assert tally.server_errors == 0 and not tally.violations, summary + "\n" + "\n".join(tally.examples)
