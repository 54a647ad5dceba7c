"""Test app for functions with bindings the local host does not implement (tests/host/test_admin.py).

`queued` has a queue output and `blob_reader` a blob input: the host indexes both "in error" and never
runs them; `ok` has only supported bindings and must keep working beside them.
"""

from __future__ import annotations

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="ok", methods=["GET"])
def ok(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("ok")


@app.route(route="queued", methods=["POST"])
@app.queue_output(arg_name="msg", queue_name="work", connection="AzureWebJobsStorage")
def queued(req: func.HttpRequest, msg: func.Out[str]) -> func.HttpResponse:
    msg.set(req.get_body().decode())
    return func.HttpResponse("queued", status_code=202)


@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer")
@app.blob_input(arg_name="blob", path="container/name.txt", connection="AzureWebJobsStorage")
def blob_reader(timer: func.TimerRequest, blob: str) -> None:
    raise AssertionError("a function in error must never run")
