"""Helpers shared by the Durable tests: start orchestrations and read their status over HTTP, through the
test app's functions (which use the SDK's real `DurableOrchestrationClient`)."""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from local.run.services import LocalHost, start_host

DURABLE_APP = Path(__file__).resolve().parent / "apps" / "durable_app"
TERMINAL = {"Completed", "Failed", "Terminated"}


def start_durable_host(state_dir: Path, log_path: Path) -> LocalHost:
    """The local host running the Durable test app; activities keep their state under state_dir."""
    # Hex keys: a generated key may start with "-", which the host's argument parser would misread.
    return start_host(DURABLE_APP, {"DURABLE_TEST_STATE_DIR": str(state_dir)}, log_path=log_path,
                      master_key=secrets.token_hex(16), function_key=secrets.token_hex(16))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def start(host: LocalHost, name: str, payload: Any, instance_id: str) -> requests.Response:
    return requests.post(f"{host.url}/api/orchestrators/{name}/{instance_id}", json=payload,
                         headers={"x-functions-key": host.function_key}, timeout=30)


def status(host: LocalHost, instance_id: str, *, with_history: bool = False) -> dict[str, Any]:
    response = requests.get(f"{host.url}/api/status/{instance_id}", params={"history": "1" if with_history else "0"},
                            headers={"x-functions-key": host.function_key}, timeout=30)
    return response.json()


def wait_done(host: LocalHost, instance_id: str, *, timeout: float = 20.0,
              with_history: bool = False) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = status(host, instance_id, with_history=with_history)
        if body.get("runtimeStatus") in TERMINAL:
            return body
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} did not finish within {timeout}s; last status {body}")


def wait_status(host: LocalHost, instance_id: str, predicate: Any, *, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = status(host, instance_id)
        if predicate(body):
            return body
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} never reached the expected state; last status {body}")


def run(host: LocalHost, name: str, payload: Any, *, prefix: str | None = None,
        timeout: float = 20.0, with_history: bool = False) -> dict[str, Any]:
    instance_id = new_id(prefix or name)
    response = start(host, name, payload, instance_id)
    assert response.status_code == 202, response.text
    return wait_done(host, instance_id, timeout=timeout, with_history=with_history)
