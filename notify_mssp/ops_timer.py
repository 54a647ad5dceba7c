"""The operational-notices timer: every few minutes it evaluates the stored state of tenants and of
the MSSP's credential and sends what notices are due (notify_mssp.ops_notices), once per incident. It only
binds and delegates: notify_mssp.wiring builds the notice context and the checks' configuration.
notify_mssp/blueprint.py registers it on its blueprint (`register`).

The schedule is the OPS_NOTICES_SCHEDULE setting, like every other timer's, so a deployment (or a test
that must not be disturbed by background work) can change it; the check is cheap and idempotent.
"""

from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func

from notify_mssp import wiring
from notify_mssp.ops_notices import check_operations
from shared.tables import Table

logger = logging.getLogger(__name__)

SCHEDULE = "%OPS_NOTICES_SCHEDULE%"


def register(bp: df.Blueprint) -> None:
    """Register the ops notices timer on the notification blueprint."""

    @bp.function_name("ops_notices")
    @bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False, use_monitor=True)
    def ops_notices(timer: func.TimerRequest) -> None:
        check_operations(wiring.notice_context(), wiring.table(Table.TENANTS), wiring.table(Table.ALERTS),
                         wiring.ops_checks())
