"""Benchmark app for `make bench` scenario `durable_fanout_1000` (local/bench/durable.py).

One orchestrator fans out N trivial activities with `task_all` and sums their results; the HTTP
starter starts it with a chosen instance id through the SDK's real client. Never deployed: it exists to
measure the local host's Durable engine, not the product.
"""

from __future__ import annotations

import json

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.activity_trigger(input_name="value")
def echo(value: int) -> int:
    return value


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = context.get_input(expected_type=int)
    results = yield context.task_all([context.call_activity("echo", i) for i in range(count)])
    return {"count": len(results), "sum": sum(results)}


@app.route(route="fanout/{instance_id}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_fan_out(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    count = int(req.params.get("count", "1000"))
    instance_id = await client.start_new("fan_out", req.route_params["instance_id"], count)
    return client.create_check_status_response(req, instance_id)


@app.route(route="fanout-status/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def fan_out_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    status = await client.get_status(req.route_params["instance_id"])
    body = {"runtimeStatus": status.runtime_status.value if status.runtime_status else None,
            "output": status.output}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")
