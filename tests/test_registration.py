"""The app registers exactly the functions the design names, with the triggers and bindings Azure sees."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import azure.functions as func
import pytest

import shared.names
from function_app import app

REPO = Path(__file__).resolve().parent.parent
FEATURE_FOLDERS = ("grant_access", "fetch_alerts", "notify_mssp", "shared")


@pytest.fixture(scope="module")
def functions() -> dict[str, func.Function]:
    # get_functions() is not idempotent (it caches names and raises on a second call): call it once.
    return {f.get_function_name(): f for f in app.get_functions()}


def bindings(function: func.Function) -> dict[str, dict]:
    """The function.json view of the bindings, as the host reads them."""
    return {b["type"]: b for b in json.loads(str(function))["bindings"]}


def test_function_app_registers_one_blueprint_per_feature_folder_and_nothing_else():
    tree = ast.parse((REPO / "function_app.py").read_text())
    decorated = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    assert decorated == []
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {"fetch_alerts", "grant_access", "notify_mssp"} <= imported


def test_functions_are_exactly_the_expected_set(functions):
    assert set(functions) == {
        # grant_access
        "get_openapi",
        "health", "list_tenants", "create_invitation", "get_invitation", "portal_access", "consent_callback",
        "consent_sign_in",
        "get_tenant", "patch_tenant", "offboard_tenant", "get_tenant_purge", "fresh_consent", "verify_tenants",
        "notify_onboarding_result",
        "post_onboarding_result", "purge_tenant_alerts", "purge_tenant_alerts_batch",
        # fetch_alerts
        "fetch_alerts", "ingest_tenant", "ingest_poison", "retention_cleanup", "list_alerts",
        # notify_mssp
        "notify_mssp", "notify_tenant_group", "send_notification_batch", "list_pending_tenants",
        "notification_run_config", "plan_tenant_notifications", "send_notification_emails",
        "mark_notifications_sent", "complete_tenant_notifications", "ops_notices",
        "list_notification_rules", "create_notification_rule", "get_notification_rule",
        "replace_notification_rule", "change_notification_rule", "delete_notification_rule",
        "test_notification_rule",
    }


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        ("fetch_alerts", "%FETCH_ALERTS_SCHEDULE%"),
        ("verify_tenants", "%VERIFICATION_SCHEDULE%"),
        ("retention_cleanup", "%RETENTION_SCHEDULE%"),
        ("ops_notices", "%OPS_NOTICES_SCHEDULE%"),
    ],
)
def test_timers_run_on_their_schedules(functions, name, schedule):
    assert bindings(functions[name])["timerTrigger"]["schedule"] == schedule


def test_fetch_alerts_is_a_monitored_timer_on_the_schedule_setting_with_a_durable_client(functions):
    b = bindings(functions["fetch_alerts"])
    assert b["timerTrigger"] == {
        "type": "timerTrigger", "direction": "IN", "name": "timer",
        "schedule": "%FETCH_ALERTS_SCHEDULE%", "runOnStartup": False, "useMonitor": True,
    }
    assert b["durableClient"] == {"type": "durableClient", "direction": "IN", "name": "client"}


@pytest.mark.parametrize(("name", "queue"), [("ingest_tenant", "ingest-tenants"),
                                             ("ingest_poison", "ingest-tenants-poison")])
def test_ingestion_queue_triggers_listen_on_the_host_storage(functions, name, queue):
    assert bindings(functions[name])["queueTrigger"] == {
        "type": "queueTrigger", "direction": "IN", "name": "message", "queueName": queue,
        "connection": "AzureWebJobsStorage"}


@pytest.mark.parametrize(
    ("name", "route", "methods", "auth_level"),
    [
        ("health", "health", ["GET"], "ANONYMOUS"),
        ("get_openapi", "openapi.json", ["GET"], "FUNCTION"),
        ("list_tenants", "tenants", ["GET"], "FUNCTION"),
        ("create_invitation", "tenants", ["POST"], "FUNCTION"),
        ("get_invitation", "invitations/{invitationId}", ["GET"], "FUNCTION"),
        ("portal_access", "invitations/{invitationId}/portal-access", ["GET"], "ANONYMOUS"),
        ("consent_callback", "consent/callback", ["GET"], "ANONYMOUS"),
        ("consent_sign_in", "consent/callback", ["POST"], "ANONYMOUS"),
        ("get_tenant", "tenants/{tenantId}", ["GET"], "FUNCTION"),
        ("patch_tenant", "tenants/{tenantId}", ["PATCH"], "FUNCTION"),
        ("offboard_tenant", "tenants/{tenantId}", ["DELETE"], "FUNCTION"),
        ("fresh_consent", "tenants/{tenantId}/consent", ["POST"], "FUNCTION"),
        ("get_tenant_purge", "tenants/{tenantId}/purge", ["GET"], "FUNCTION"),
        ("list_alerts", "alerts", ["GET"], "FUNCTION"),
        ("list_notification_rules", "notification-rules", ["GET"], "FUNCTION"),
        ("create_notification_rule", "notification-rules", ["POST"], "FUNCTION"),
        ("get_notification_rule", "notification-rules/{ruleId}", ["GET"], "FUNCTION"),
        ("replace_notification_rule", "notification-rules/{ruleId}", ["PUT"], "FUNCTION"),
        ("change_notification_rule", "notification-rules/{ruleId}", ["PATCH"], "FUNCTION"),
        ("delete_notification_rule", "notification-rules/{ruleId}", ["DELETE"], "FUNCTION"),
        ("test_notification_rule", "notification-rules/{ruleId}/test", ["POST"], "FUNCTION"),
    ],
)
def test_http_functions_have_their_route_methods_and_auth_level(functions, name, route, methods, auth_level):
    trigger = bindings(functions[name])["httpTrigger"]
    assert trigger["route"] == route
    assert [str(m).upper() for m in trigger["methods"]] == methods
    assert str(trigger["authLevel"]).upper() == auth_level


def test_durable_functions_have_their_trigger_bindings(functions):
    assert bindings(functions["notify_mssp"])["orchestrationTrigger"]["name"] == "context"
    assert bindings(functions["list_pending_tenants"])["activityTrigger"]["name"] == "runId"


def test_every_shared_function_name_is_registered(functions):
    names = {v for k, v in vars(shared.names).items() if k.isupper() and isinstance(v, str)}
    assert names and names <= set(functions)


def _names_called_by_durable_apis() -> set[str]:
    """First arguments of call_activity*, call_sub_orchestrator*, start_new in product code."""
    constants = {k: v for k, v in vars(shared.names).items() if k.isupper()}
    calls = {"call_activity", "call_activity_with_retry", "call_sub_orchestrator",
             "call_sub_orchestrator_with_retry", "start_new"}
    found: set[str] = set()
    for folder in FEATURE_FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in calls and node.args:
                    arg = node.args[0]
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        found.add(arg.value)
                    elif isinstance(arg, ast.Name):
                        assert arg.id in constants, f"{path}: {arg.id} is not a shared.names constant"
                        found.add(constants[arg.id])
    return found


def test_every_orchestrator_and_activity_name_used_in_code_exists(functions):
    used = _names_called_by_durable_apis()
    assert {"notify_mssp", "list_pending_tenants"} <= used
    assert used <= set(functions)


def test_no_function_json_anywhere():
    found = [p for p in REPO.rglob("function.json") if ".venv" not in p.parts and "node_modules" not in p.parts]
    assert found == []
