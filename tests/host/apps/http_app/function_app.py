"""Test app for the local host's own tests (tests/host): HTTP routing, keys, failures, timeouts, timers.

Every timer's schedule comes from an app setting, so each test module turns on only the timers it
checks (the others get a schedule that never comes within the test's time). Timer invocations are
recorded in memory and read back through the anonymous `records` route.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

_records: list[dict[str, object]] = []
_records_lock = threading.Lock()


def _record(kind: str, **fields: object) -> None:
    with _records_lock:
        _records.append({"kind": kind, **fields})


def _json(body: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@app.route(methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hello")


@app.route(route="echo/{kind}", methods=["POST", "PUT"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    return _json({
        "method": req.method,
        "url": req.url,
        "route_params": dict(req.route_params),
        "params": dict(req.params),
        "headers": {k: v for k, v in req.headers.items() if k.startswith("x-test")},
        "body": req.get_body().decode("utf-8"),
        "body_length": len(req.get_body()),
    })


@app.route(route="items/{id:int}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item_by_id(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"function": "item_by_id", "route_params": dict(req.route_params)})


@app.route(route="items/{name:alpha}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item_by_name(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"function": "item_by_name", "route_params": dict(req.route_params)})


@app.route(route="items/latest", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def item_latest(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"function": "item_latest", "route_params": dict(req.route_params)})


@app.route(route="files/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def files(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route_params": dict(req.route_params)})


@app.route(route="pages/{page?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def pages(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route_params": dict(req.route_params)})


@app.route(route="guids/{id:guid}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def guids(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route_params": dict(req.route_params)})


@app.route(route="secured/function", methods=["GET"])
def function_level(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("function level")


@app.route(route="secured/admin", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_level(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin level")


@app.route(route="secured/anonymous", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def anonymous_level(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("anonymous level")


@app.route(route="plain", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def plain(req: func.HttpRequest) -> str:
    return "plain text"


@app.route(route="unencodable", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def unencodable(req: func.HttpRequest) -> func.HttpResponse:
    return {"not": "a response"}  # type: ignore[return-value]


@app.route(route="status/{code:int}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def status(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        "custom", status_code=int(req.route_params["code"]), headers={"X-Custom": "yes"}, mimetype="text/csv"
    )


@app.route(route="fail", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def fail(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("secret failure detail")


@app.route(route="slow", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def slow(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    # The caller's marker tells its invocation's records apart from earlier, abandoned ones.
    marker = req.params.get("marker")
    _record("slow_started", marker=marker, invocation_id=context.invocation_id)
    time.sleep(float(req.params.get("seconds", "4")))
    _record("slow_finished", marker=marker)
    return func.HttpResponse("slow done")


@app.route(route="slow-async", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def slow_async(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(float(req.params.get("seconds", "4")))
    return func.HttpResponse("slow async done")


@app.route(route="async", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def async_hello(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0)
    return func.HttpResponse("async hello")


@app.route(route="context", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _json({"function_name": context.function_name, "invocation_id": context.invocation_id})


@app.route(route="settings/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def read_setting(req: func.HttpRequest) -> func.HttpResponse:
    import os

    return _json({"value": os.environ.get(req.route_params["name"])})


@app.route(route="records", methods=["GET", "DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
def records(req: func.HttpRequest) -> func.HttpResponse:
    with _records_lock:
        snapshot = list(_records)
        if req.method == "DELETE":
            _records.clear()
    return _json(snapshot)


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer")
def tick(timer: func.TimerRequest) -> None:
    _record("tick", at=time.time(), past_due=timer.past_due, status=timer.schedule_status,
            schedule=timer.schedule)


@app.timer_trigger(schedule="%STARTUP_SCHEDULE%", arg_name="timer", run_on_startup=True)
def startup(timer: func.TimerRequest) -> None:
    _record("startup", at=time.time(), past_due=timer.past_due, status=timer.schedule_status)


@app.timer_trigger(schedule="%SLOW_TICK_SCHEDULE%", arg_name="timer")
def slow_tick(timer: func.TimerRequest) -> None:
    started = time.time()
    time.sleep(1.5)
    _record("slow_tick", start=started, end=time.time(), past_due=timer.past_due)


@app.timer_trigger(schedule="%MONITORED_SCHEDULE%", arg_name="timer")
def monitored(timer: func.TimerRequest) -> None:
    _record("monitored", at=time.time(), past_due=timer.past_due, status=timer.schedule_status)


# A fixed schedule that never comes within a test, with schedule monitoring off: runs only when invoked.
@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", use_monitor=False)
def unmonitored(timer: func.TimerRequest) -> None:
    _record("unmonitored", at=time.time(), past_due=timer.past_due, status=timer.schedule_status)
