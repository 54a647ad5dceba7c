"""Test app for the local host's Durable engine (tests/host/test_durable*.py).

Orchestrators cover fan-out, retries, timers, task_any, sub-orchestrations, continue_as_new, custom
status, external events and failures; activities keep their observable state (attempt counts, side
effects, concurrency) in files under the directory named by the `DURABLE_TEST_STATE_DIR` setting, so a
test can read it even after the host process died. The HTTP functions start orchestrations and read
their status through the SDK's real `DurableOrchestrationClient`.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


def _state_dir() -> Path:
    path = Path(os.environ["DURABLE_TEST_STATE_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def _add(name: str, delta: int) -> int:
    """Add to a counter file atomically (functions run on several threads) and return the new value."""
    path = _state_dir() / name
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        value = int(handle.read() or "0") + delta
        handle.seek(0)
        handle.truncate()
        handle.write(str(value))
        return value


def _bump(name: str) -> int:
    return _add(name, 1)


# --- activities -------------------------------------------------------------------------------------------


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


@app.activity_trigger(input_name="request")
def flaky(request: dict[str, Any]) -> int:
    """Fails `fail_times` times for a key, then succeeds with the attempt number."""
    attempt = _bump(f"flaky-{request['key']}")
    if attempt <= request["fail_times"]:
        raise RuntimeError(f"flaky attempt {attempt} failed")
    return attempt


@app.activity_trigger(input_name="key")
def record_side_effect(key: str) -> str:
    with open(_state_dir() / f"side-effects-{key}.log", "a", encoding="utf-8") as handle:
        handle.write("done\n")
    return key


@app.activity_trigger(input_name="seconds")
def slow(seconds: float) -> str:
    time.sleep(seconds)
    return "slow finished"


def _measure_overlap(key: str, seconds: float) -> int:
    """Runs for `seconds` while recording in `peak-<key>` how many such calls overlapped at most."""
    running = _add(f"running-{key}", 1)
    peak_path = _state_dir() / f"peak-{key}"
    with open(peak_path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        peak = max(int(handle.read() or "0"), running)
        handle.seek(0)
        handle.truncate()
        handle.write(str(peak))
    time.sleep(seconds)
    _add(f"running-{key}", -1)
    return running


@app.activity_trigger(input_name="key")
def measure_concurrency(key: str) -> int:
    return _measure_overlap(key, 0.15)


# --- orchestrators -----------------------------------------------------------------------------------------


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = context.get_input(expected_type=int)
    results = yield context.task_all([context.call_activity("double", i) for i in range(count)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def concurrency_fan_out(context: df.DurableOrchestrationContext):
    request = context.get_input(expected_type=dict)
    tasks = [context.call_activity("measure_concurrency", request["key"]) for _ in range(request["count"])]
    yield context.task_all(tasks)
    return request["count"]


@app.orchestration_trigger(context_name="context")
def retry_flaky(context: df.DurableOrchestrationContext):
    request = context.get_input(expected_type=dict)
    options = df.RetryOptions(first_retry_interval_in_milliseconds=request.get("interval_ms", 50),
                              max_number_of_attempts=request["max_attempts"])
    attempt = yield context.call_activity_with_retry("flaky", options, request)
    return {"succeeded_on_attempt": attempt}


@app.orchestration_trigger(context_name="context")
def parallel_retries(context: df.DurableOrchestrationContext):
    """Retried activities side by side with a plain one: their timers and attempts interleave."""
    options = df.RetryOptions(first_retry_interval_in_milliseconds=30, max_number_of_attempts=4)
    tasks = [context.call_activity_with_retry("flaky", options, {"key": f"{context.instance_id}-{i}",
                                                                 "fail_times": i})
             for i in range(4)]
    tasks.append(context.call_activity("double", 5))
    results = yield context.task_all(tasks)
    after = yield context.call_activity("double", 6)
    return {"attempts": results[:4], "doubled": [results[4], after]}


@app.orchestration_trigger(context_name="context")
def durable_timer(context: df.DurableOrchestrationContext):
    seconds = context.get_input(expected_type=float)
    started = context.current_utc_datetime
    yield context.create_timer(started + timedelta(seconds=seconds))
    return {"started": started.isoformat(), "resumed": context.current_utc_datetime.isoformat()}


@app.orchestration_trigger(context_name="context")
def race(context: df.DurableOrchestrationContext):
    """task_any between a slow activity and a timer; reports which finished first."""
    request = context.get_input(expected_type=dict)
    activity = context.call_activity("slow", request["activity_s"])
    timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=request["timer_s"]))
    winner = yield context.task_any([activity, timer])
    if winner == activity:
        timer.cancel()
        return {"winner": "activity", "result": activity.result}
    return {"winner": "timer"}


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    first = yield context.call_sub_orchestrator("fan_out", 3)
    options = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=3)
    second = yield context.call_sub_orchestrator_with_retry(
        "retry_flaky", options, {"key": context.instance_id, "fail_times": 1, "max_attempts": 3})
    return {"fan_out": first, "retry_flaky": second}


@app.orchestration_trigger(context_name="context")
def flaky_child(context: df.DurableOrchestrationContext):
    attempt = yield context.call_activity("flaky", context.get_input(expected_type=dict))
    return attempt


@app.orchestration_trigger(context_name="context")
def parent_retrying_child(context: df.DurableOrchestrationContext):
    options = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=3)
    attempt = yield context.call_sub_orchestrator_with_retry(
        "flaky_child", options, {"key": context.instance_id, "fail_times": 1})
    return attempt


@app.orchestration_trigger(context_name="context")
def parent_of_waiting_child(context: df.DurableOrchestrationContext):
    """Returns what its child `with_status` (which waits for an "approval" event) returns; the input is
    the child's instance id."""
    result = yield context.call_sub_orchestrator("with_status", None, context.get_input(expected_type=str))
    return result


@app.orchestration_trigger(context_name="context")
def parent_catching_child(context: df.DurableOrchestrationContext):
    try:
        yield context.call_sub_orchestrator("failing", None)
    except Exception as exc:  # the child's failure surfaces here, as in Azure
        return {"caught": str(exc)}
    return {"caught": None}


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):
    yield context.call_activity("double", 1)
    raise ValueError("the orchestrator gave up")


@app.orchestration_trigger(context_name="context")
def nondeterministic(context: df.DurableOrchestrationContext):
    """Deliberately wrong: picks its activity from state outside the history, so a replay differs."""
    first = "double" if _bump(f"episodes-{context.instance_id}") == 1 else "slow"
    yield context.call_activity(first, 1)
    yield context.call_activity("double", 2)
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    value = context.get_input(expected_type=int)
    if value < 3:
        context.continue_as_new(value + 1)
        return None
    return value


@app.orchestration_trigger(context_name="context")
def with_status(context: df.DurableOrchestrationContext):
    context.set_custom_status({"stage": "waiting"})
    approval = yield context.wait_for_external_event("approval")
    context.set_custom_status({"stage": "approved"})
    return {"approval": approval}


@app.orchestration_trigger(context_name="context")
def busy_episode(context: df.DurableOrchestrationContext):
    """Deliberately slow orchestrator code, to observe how many episodes run at once (long enough that
    every started instance is queued before the first ones finish, even on a loaded machine)."""
    _measure_overlap(context.get_input(expected_type=str), 1.0)
    return "done"


@app.orchestration_trigger(context_name="context")
def side_effect(context: df.DurableOrchestrationContext):
    key = context.get_input(expected_type=str)
    result = yield context.call_activity("record_side_effect", key)
    doubled = yield context.call_activity("double", 21)
    return {"recorded": result, "doubled": doubled}


# --- HTTP: starter and status through the SDK's client ---------------------------------------------------


@app.route(route="orchestrators/{name}/{instance_id}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_orchestration(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    payload = json.loads(body) if body else None
    try:
        instance_id = await client.start_new(req.route_params["name"], req.route_params["instance_id"], payload)
    except Exception as exc:  # the SDK raises the extension's error body for a refused start
        return func.HttpResponse(json.dumps({"refused": str(exc)}), status_code=409, mimetype="application/json")
    return client.create_check_status_response(req, instance_id)


@app.route(route="status/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def orchestration_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    show_history = req.params.get("history") == "1"
    status = await client.get_status(req.route_params["instance_id"], show_history=show_history,
                                     show_history_output=show_history, show_input=True)
    if not status:
        return func.HttpResponse(json.dumps({"found": False}), status_code=404, mimetype="application/json")
    body = status.to_json()
    body["found"] = True
    if show_history:
        body["history"] = status.historyEvents if hasattr(status, "historyEvents") else None
    return func.HttpResponse(json.dumps(body, default=str), mimetype="application/json")


@app.route(route="instances", methods=["GET"])
@app.durable_client_input(client_name="client")
async def list_instances(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    wanted = req.params.get("status")
    if wanted:
        found = await client.get_status_by(runtime_status=[df.OrchestrationRuntimeStatus(wanted)])
    else:
        found = await client.get_status_all()
    body = [{"instanceId": s.instance_id, "runtimeStatus": s.runtime_status.value} for s in found]
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.route(route="terminate/{instance_id}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def terminate(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.terminate(req.route_params["instance_id"], "stopped by test")
    return func.HttpResponse(status_code=202)


@app.route(route="purge/{instance_id}", methods=["DELETE"])
@app.durable_client_input(client_name="client")
async def purge(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        result = await client.purge_instance_history(req.route_params["instance_id"])
    except Exception as exc:  # the SDK raises on a status it does not expect, e.g. a running instance
        return func.HttpResponse(json.dumps({"refused": str(exc)}), status_code=409, mimetype="application/json")
    return func.HttpResponse(json.dumps({"deleted": result.instances_deleted}), mimetype="application/json")


@app.route(route="raise/{instance_id}/{event}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def raise_event(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    await client.raise_event(req.route_params["instance_id"], req.route_params["event"], req.get_json())
    return func.HttpResponse(status_code=202)
