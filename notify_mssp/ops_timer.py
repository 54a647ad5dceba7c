"""The operational-notices timer: every few minutes it evaluates the stored state of tenants and of
the MSSP's credential and sends what notices are due (notify_mssp.ops_notices), once per incident.

The schedule is the OPS_NOTICES_SCHEDULE setting, like every other timer's, so a deployment (or a test
that must not be disturbed by background work) can change it; the check is cheap and idempotent.
"""

from __future__ import annotations

import logging

import azure.functions as func

from notify_mssp.blueprint import bp
from notify_mssp.ops_notices import check_operations, notice_context
from shared.settings import get_settings
from shared.tables import Table, get_table_store

logger = logging.getLogger(__name__)

SCHEDULE = "%OPS_NOTICES_SCHEDULE%"


@bp.function_name("ops_notices")
@bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False, use_monitor=True)
def ops_notices(timer: func.TimerRequest) -> None:
    store = get_table_store()
    check_operations(notice_context(), store.table(Table.TENANTS), store.table(Table.ALERTS), get_settings())
