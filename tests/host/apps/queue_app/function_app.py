"""Test app for the local host's Storage queue trigger (tests/host/test_queues.py).

`work` (async) takes JSON messages on the queue named by the WORK_QUEUE setting and obeys them: `sleep` seconds,
`sleep_first` seconds on the first delivery only, `fail` "always" or on deliveries up to that number. Each
invocation records, before it obeys, what the function received as a `func.QueueMessage`, this process's id and
how many `work` invocations ran at once in this process, as a row of the table named by RECORDS_TABLE (in the
AzureWebJobsStorage account), so records outlive a killed host and span instances. `poisoned` (sync) records what
reaches `<WORK_QUEUE>-poison`; `idle` listens on IDLE_QUEUE, which stays empty.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import azure.functions as func
from azure.data.tables import TableServiceClient

app = func.FunctionApp()

_running = 0


def _record(kind: str, message: func.QueueMessage, **fields: Any) -> None:
    service = TableServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])
    table = service.create_table_if_not_exists(os.environ["RECORDS_TABLE"])
    body = message.get_body().decode("utf-8")
    times = {name: getattr(message, name) for name in ("insertion_time", "expiration_time", "time_next_visible")}
    table.create_entity({
        "PartitionKey": kind, "RowKey": uuid.uuid4().hex, "body": body, "messageId": message.id or "",
        "dequeueCount": message.dequeue_count, "popReceipt": message.pop_receipt or "",
        "isQueueMessage": isinstance(message, func.QueueMessage), "pid": os.getpid(),
        **{name: value.isoformat() if value is not None else "" for name, value in times.items()},
        **fields,
    })


@app.function_name("work")
@app.queue_trigger(arg_name="message", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
async def work(message: func.QueueMessage) -> None:
    global _running
    _running += 1
    try:
        order = message.get_json()
        await asyncio.to_thread(_record, "work", message, key=order["key"], concurrency=_running)
        first = message.dequeue_count == 1
        await asyncio.sleep(float(order.get("sleep", 0)) + (float(order.get("sleep_first", 0)) if first else 0))
        fail = order.get("fail")
        if fail == "always" or (isinstance(fail, int) and (message.dequeue_count or 0) <= fail):
            raise RuntimeError(f"failing {order['key']} as asked (delivery {message.dequeue_count})")
    finally:
        _running -= 1


@app.function_name("poisoned")
@app.queue_trigger(arg_name="message", queue_name="%WORK_QUEUE%-poison", connection="AzureWebJobsStorage")
def poisoned(message: func.QueueMessage) -> None:
    _record("poisoned", message)


@app.function_name("idle")
@app.queue_trigger(arg_name="message", queue_name="%IDLE_QUEUE%", connection="AzureWebJobsStorage")
def idle(message: func.QueueMessage) -> None:
    raise AssertionError("the idle queue never gets a message")
