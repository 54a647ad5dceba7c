"""The triggers of the notification rules API (auth level FUNCTION): create, list, read, replace, change and
delete rules at `/api/notification-rules[/{ruleId}]`, and `POST /api/notification-rules/{ruleId}/test`
(the rule's test e-mail). notify_mssp/blueprint.py registers them on its blueprint (`register`). Each
trigger parses the request (bodies are checked like the onboarding webhook's: size 413, content type 415,
JSON 400), calls notify_mssp.rules_service with what notify_mssp.wiring builds, and shapes the response;
errors are problem+json naming the field (shared.problems.run_api).
"""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from notify_mssp import rules_service as service
from notify_mssp import wiring
from notify_mssp.rules_service import ROUTE
from shared.problems import Problem, json_response, run_api
from shared.request_body import check_transport, parse_body
from shared.rules import StoredRule
from shared.tables import Table
from shared.validators import is_guid

logger = logging.getLogger(__name__)


def _rule_response(stored: StoredRule, status: int = 200) -> func.HttpResponse:
    headers = {"ETag": stored.etag}
    if status == 201:
        headers["Location"] = f"/api/{ROUTE}/{stored.rule.id}"
    return json_response(service.rule_body(stored), status, headers)


def _body(req: func.HttpRequest) -> dict[str, Any]:
    body = req.get_body()
    check_transport(body, req.headers.get("Content-Type"), req.headers.get("Content-Length"), None, "")
    return parse_body(body)


def _rule_id(req: func.HttpRequest) -> str:
    return service.rule_id_from_route(req.route_params.get("ruleId", ""))


def answer_for_test_email(rule_id: str, results: list[dict[str, Any]]) -> func.HttpResponse:
    if all(r["status"] == "sent" for r in results):
        return json_response({"ruleId": rule_id, "results": results})
    if any(r["status"] == "permanent" for r in results):
        return Problem(422, "the mail server refused at least one recipient", field="recipients",
                       results=results).response()
    waits = [r["retry_after"] for r in results if r.get("retry_after")]
    response = Problem(503, "the test e-mail could not be sent now; try again later", results=results).response()
    if waits:
        response.headers["Retry-After"] = str(int(max(waits)) + 1)
    return response


def register(bp: df.Blueprint) -> None:
    """Register the rules API's seven functions on the notification blueprint."""

    @bp.function_name("list_notification_rules")
    @bp.route(route=ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
    def list_notification_rules(req: func.HttpRequest) -> func.HttpResponse:
        """Every rule; `?tenantId=` keeps the rules that cover that tenant."""

        def handle() -> func.HttpResponse:
            tenant = req.params.get("tenantId")
            if tenant is not None and not is_guid(tenant):
                raise Problem(400, "must be a tenant GUID", field="tenantId")
            rules = service.list_rules(wiring.rules(), tenant)
            return json_response({"value": [service.rule_body(s) for s in rules]})

        return run_api(handle, logger)

    @bp.function_name("create_notification_rule")
    @bp.route(route=ROUTE, methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
    def create_notification_rule(req: func.HttpRequest) -> func.HttpResponse:
        return run_api(lambda: _rule_response(service.create_rule(wiring.rules(), _body(req), wiring.utcnow()), 201),
                       logger)

    @bp.function_name("get_notification_rule")
    @bp.route(route=ROUTE + "/{ruleId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
    def get_notification_rule(req: func.HttpRequest) -> func.HttpResponse:
        return run_api(lambda: _rule_response(service.get_rule(wiring.rules(), _rule_id(req))), logger)

    @bp.function_name("replace_notification_rule")
    @bp.route(route=ROUTE + "/{ruleId}", methods=["PUT"], auth_level=func.AuthLevel.FUNCTION)
    def replace_notification_rule(req: func.HttpRequest) -> func.HttpResponse:
        def handle() -> func.HttpResponse:
            rule_id = _rule_id(req)
            return _rule_response(service.update_rule(wiring.rules(), rule_id, _body(req), req.headers.get("If-Match"),
                                                      wiring.utcnow(), merge=False))

        return run_api(handle, logger)

    @bp.function_name("change_notification_rule")
    @bp.route(route=ROUTE + "/{ruleId}", methods=["PATCH"], auth_level=func.AuthLevel.FUNCTION)
    def change_notification_rule(req: func.HttpRequest) -> func.HttpResponse:
        def handle() -> func.HttpResponse:
            rule_id = _rule_id(req)
            return _rule_response(service.update_rule(wiring.rules(), rule_id, _body(req), req.headers.get("If-Match"),
                                                      wiring.utcnow(), merge=True))

        return run_api(handle, logger)

    @bp.function_name("delete_notification_rule")
    @bp.route(route=ROUTE + "/{ruleId}", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
    def delete_notification_rule(req: func.HttpRequest) -> func.HttpResponse:
        def handle() -> func.HttpResponse:
            service.delete_rule(wiring.rules(), _rule_id(req), req.headers.get("If-Match"))
            return func.HttpResponse(status_code=204)

        return run_api(handle, logger)

    @bp.function_name("test_notification_rule")
    @bp.route(route=ROUTE + "/{ruleId}/test", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
    def send_test_email(req: func.HttpRequest) -> func.HttpResponse:
        """Send the rule's test e-mail now (a disabled rule too: testing before enabling is the point)."""

        def handle() -> func.HttpResponse:
            rule = service.get_rule(wiring.rules(), _rule_id(req)).rule
            rate_cap = wiring.send_rate_cap()
            results = service.send_test(rule, wiring.table(Table.TENANTS), wiring.transport(), rate_cap,
                                        wiring.utcnow(), wiring.sender())
            return answer_for_test_email(rule.id, results)

        return run_api(handle, logger)
