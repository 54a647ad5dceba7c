"""The operational-notices timer (#5): every few minutes it evaluates the stored state of tenants and of
the MSSP's credential and sends what notices are due (notify_mssp.ops_notices), once per incident.

The schedule is fixed here rather than a %SETTING% expression: the host refuses to load the app when a
%SETTING% is missing, and the check is cheap and idempotent, so there is nothing to tune.
"""

from __future__ import annotations

import logging

import azure.functions as func

from notify_mssp.blueprint import bp
from notify_mssp.ops_notices import check_operations, notice_context
from shared.settings import get_settings
from shared.tables import Table, get_table_store

logger = logging.getLogger(__name__)

SCHEDULE = "0 */5 * * * *"


@bp.function_name("ops_notices")
@bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False, use_monitor=True)
def ops_notices(timer: func.TimerRequest) -> None:
    store = get_table_store()
    check_operations(notice_context(), store.table(Table.TENANTS), store.table(Table.ALERTS), get_settings())
