"""Benchmark scenario `durable_fanout_1000`: one orchestration fanning out 1,000 trivial activities.

Starts the local host with the bench app (local/bench/apps/fanout), starts the orchestration over HTTP
through the app's starter (the SDK's real client), polls the status URL that `create_check_status_response`
returned until it completes, and reports the wall time, the number of orchestrator replays and the peak
RSS of the host process (the process that runs the app). The bound is the same 1,000 activity calls made
directly on the host's activity pool and invoker, without orchestration, measured in the same run.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from local.run.services import LocalHost, start_host

logger = logging.getLogger(__name__)

BENCH_APP = Path(__file__).resolve().parent / "apps" / "fanout"
ACTIVITIES = 1000
TARGET_S = 10.0
POLL_INTERVAL_S = 0.05
TIMEOUT_S = 120.0


def run_durable_fanout_1000(workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    # Hex keys: a generated key may start with "-", which the host's argument parser would misread.
    host = start_host(BENCH_APP, {"FUNCTIONS_WORKER_RUNTIME": "python"}, log_path=workdir / "host.log",
                      master_key=secrets.token_hex(16), function_key=secrets.token_hex(16))
    try:
        # Warm-up: first invocations import and index lazily; neither figure should pay for that.
        _run_fan_out(host, 10)
        bound = _direct_calls(host, ACTIVITIES)
        wall_s, instance_id, output = _run_fan_out(host, ACTIVITIES)
        diagnostics = host.admin("GET", f"local/durable/instances/{instance_id}").json()
        peak_rss_mb = _peak_rss_mb(host.process.pid)
    finally:
        host.stop()
    correct = output == {"count": ACTIVITIES, "sum": ACTIVITIES * (ACTIVITIES - 1) // 2}
    if not correct:
        logger.error("fan-out returned %s", output)
    return {
        "activities": ACTIVITIES,
        "wall_s": round(wall_s, 3),
        "replays": diagnostics["replays"],
        "peak_rss_mb": peak_rss_mb,
        "bound": round(bound, 3),
        "target": f"wall_s < {TARGET_S:g}",
        "met": correct and wall_s < TARGET_S,
    }


def _run_fan_out(host: LocalHost, count: int) -> tuple[float, str, Any]:
    instance_id = f"bench-{uuid.uuid4().hex}"
    headers = {"x-functions-key": host.function_key}
    started = time.perf_counter()
    response = requests.post(f"{host.url}/api/fanout/{instance_id}", params={"count": count}, headers=headers,
                             timeout=30)
    response.raise_for_status()
    status_url = response.json()["statusQueryGetUri"]
    deadline = started + TIMEOUT_S
    while time.perf_counter() < deadline:
        status = requests.get(status_url, timeout=30)
        body = status.json()
        if body["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            elapsed = time.perf_counter() - started
            if body["runtimeStatus"] != "Completed":
                raise RuntimeError(f"fan-out {instance_id} ended {body['runtimeStatus']}: {body['output']}")
            return elapsed, instance_id, body["output"]
        time.sleep(POLL_INTERVAL_S)
    raise TimeoutError(f"fan-out {instance_id} did not finish within {TIMEOUT_S:.0f}s")


def _direct_calls(host: LocalHost, count: int) -> float:
    response = host.admin("POST", "local/durable/direct", json={"function": "echo", "count": count, "input": 1})
    response.raise_for_status()
    return float(response.json()["wall_s"])


def _peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of the host process, read while it still runs."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0
