"""The host's own record of result reports: the `notify_onboarding_result` orchestrations of one invitation.

A report is started inside the request or timer invocation that decided it (grant_access/blueprint.py,
`_report_results`), one orchestration per invitation and result. Once that request or invocation has ended,
the orchestrations listed here are every report that will ever be made for it, so a test proves that
nothing more is POSTed by waiting for them to end, never by sleeping.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from grant_access.notify_callback import instance_id
from local.run.stack import LocalStack

DURABLE_API = "runtime/webhooks/durabletask"
TERMINAL = ("Completed", "Failed", "Terminated")


def result_runs(stack: LocalStack, invitation_id: str) -> list[dict[str, Any]]:
    """Every result orchestration of the invitation, from the Durable HTTP API."""
    assert stack.host is not None
    response = requests.get(f"{stack.host.url}/{DURABLE_API}/instances", timeout=30,
                            params={"code": stack.host.master_key,
                                    "instanceIdPrefix": instance_id(invitation_id, "")})
    response.raise_for_status()
    return list(response.json())


def finished_result_runs(stack: LocalStack, invitation_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The invitation's result orchestrations once every one of them has ended (none: an empty list)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = result_runs(stack, invitation_id)
        if all(r.get("runtimeStatus") in TERMINAL for r in runs):
            return runs
        assert time.monotonic() < deadline, f"result reports still running: {runs}"
        time.sleep(0.1)


def result_run_history(stack: LocalStack, invitation_id: str, status: str) -> list[dict[str, Any]]:
    """The recorded history events of the invitation's report of `status` (timers, activities)."""
    assert stack.host is not None
    response = requests.get(f"{stack.host.url}/{DURABLE_API}/instances/{instance_id(invitation_id, status)}",
                            params={"code": stack.host.master_key, "showHistory": "true"}, timeout=30)
    response.raise_for_status()
    return list(response.json()["historyEvents"])
