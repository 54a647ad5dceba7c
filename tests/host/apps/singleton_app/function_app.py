"""Test app for the timers of several host instances (tests/host/test_singleton_timer.py): `tick` fires on the
TICK_SCHEDULE setting's schedule, `monitored` on MONITORED_SCHEDULE and records the TimerRequest it got in the
table named by RECORDS_TABLE (in the AzureWebJobsStorage account). The lock periods in host.json are the shortest
Azure Storage leases allow, so a dead instance's lock passes to another within about half a minute.
"""

from __future__ import annotations

import json
import os
import uuid

import azure.functions as func
from azure.data.tables import TableServiceClient

app = func.FunctionApp()


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer")
def tick(timer: func.TimerRequest) -> None:
    pass


@app.timer_trigger(schedule="%MONITORED_SCHEDULE%", arg_name="timer")
def monitored(timer: func.TimerRequest) -> None:
    service = TableServiceClient.from_connection_string(os.environ["AzureWebJobsStorage"])
    table = service.create_table_if_not_exists(os.environ["RECORDS_TABLE"])
    status = timer.schedule_status or {}
    table.create_entity({"PartitionKey": "monitored", "RowKey": uuid.uuid4().hex, "pid": os.getpid(),
                         "pastDue": timer.past_due, "status": json.dumps(status)})
