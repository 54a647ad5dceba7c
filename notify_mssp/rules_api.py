"""The notification rules API (auth level FUNCTION): create, list, read, replace, change and delete
rules at `/api/notification-rules[/{ruleId}]`, and `POST /api/notification-rules/{ruleId}/test`, which
sends a test e-mail to the rule's recipients as Defender's "Send test email" does: about a made-up alert
that says it is one, linking to the tenant's alert list in the portal (the sample has no page of its own).

Bodies are checked like the onboarding webhook's (size 413, content type 415, JSON 400) and validated by
the one rule validation (grant_access.rules.validate_rule), so errors are problem+json naming the field.
A rule carries its table ETag: `If-Match` on PUT, PATCH and DELETE makes a change conditional (412 when
someone changed the rule meanwhile). Two rules with the same name and the same scope are refused (409),
and so is a rule beyond MAX_RULES.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from notify_mssp.blueprint import bp
from notify_mssp.email import Sender, render_alert_email
from notify_mssp.ratecap import SendRateCap
from notify_mssp.rules import Rule, rule_from_row
from notify_mssp.transports import SendOutcome, Transport, get_transport
from shared.problems import Problem, json_response, run_api
from shared.request_body import check_transport, parse_body
from shared.rules import RULE_PARTITION
from shared.settings import get_settings
from shared.tables import Table, delete_if_unchanged, get_table_store, write_if_unchanged
from shared.tenants import TenantRegistry
from shared.validators import is_guid

logger = logging.getLogger(__name__)

ROUTE = "notification-rules"
MAX_RULES = 1000
_RULE_ID = re.compile(r"^[0-9a-f]{32}$")
SAMPLE_ALERT_ID = "test-alert-00000000-sample-not-real"


# --- the rules table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRule:
    rule: Rule
    etag: str
    row: dict[str, Any]

    def body(self) -> dict[str, Any]:
        return {**self.rule.to_json(), "origin": self.row.get("origin") or "api",
                "href": f"/api/{ROUTE}/{self.rule.id}"}


def _stored(entity: Any) -> StoredRule:
    row = dict(entity)
    return StoredRule(rule_from_row(row), entity.metadata["etag"], row)


def rule_id_from_route(value: str) -> str:
    if not _RULE_ID.fullmatch(value):
        raise Problem(404, "no such notification rule", field="ruleId")
    return value


def get_rule(table: TableClient, rule_id: str) -> StoredRule:
    try:
        return _stored(table.get_entity(RULE_PARTITION, rule_id))
    except ResourceNotFoundError:
        raise Problem(404, "no such notification rule", field="ruleId") from None


def list_rules(table: TableClient) -> list[StoredRule]:
    """Every rule that validates (one that does not is logged by its id and left out)."""
    rules = []
    for entity in table.query_entities("PartitionKey eq @pk", parameters={"pk": RULE_PARTITION}):
        try:
            rules.append(_stored(entity))
        except Problem as exc:
            logger.error("notification rule %s is unusable: %s: %s", entity.get("RowKey"), exc.field, exc.detail)
    return sorted(rules, key=lambda s: (s.rule.name.casefold(), s.rule.id))


def _scope_key(rule: Rule) -> tuple[object, ...]:
    return (rule.tenants if rule.tenants == "all" else tuple(sorted(rule.tenants)), tuple(sorted(rule.exclude_tenants)))


def _refuse_duplicate(table: TableClient, rule: Rule) -> None:
    for other in list_rules(table):
        if other.rule.id != rule.id and other.rule.name.casefold() == rule.name.casefold() \
                and _scope_key(other.rule) == _scope_key(rule):
            raise Problem(409, f"another rule with this name and scope exists ({other.rule.id})", field="name")


def validate_body(body: dict[str, Any], rule_id: str) -> Rule:
    """A Rule from a request body; `id`, when given, must be the rule's own; read-only fields are refused."""
    given = body.pop("id", rule_id)
    body.pop("href", None)  # a GET representation sent back as it came
    body.pop("origin", None)
    if given != rule_id:
        raise Problem(400, "must be the id of the rule in the URL (ids are set by the service)", field="id")
    return Rule.from_json({**body, "id": rule_id})


def create_rule(table: TableClient, body: dict[str, Any], now: datetime) -> StoredRule:
    if "id" in body:
        raise Problem(400, "rule ids are set by the service", field="id")
    rule = validate_body(body, uuid.uuid4().hex)
    if sum(1 for _ in table.query_entities("PartitionKey eq @pk", parameters={"pk": RULE_PARTITION},
                                           select=["RowKey"])) >= MAX_RULES:
        raise Problem(409, f"at most {MAX_RULES} notification rules; delete one first", field="body")
    _refuse_duplicate(table, rule)
    table.create_entity({"PartitionKey": RULE_PARTITION, "RowKey": rule.id, "rule": json.dumps(rule.to_json()),
                         "name": rule.name, "enabled": rule.enabled, "origin": "api", "createdAt": now,
                         "updatedAt": now})
    logger.info("notification rule %s created", rule.id)
    return get_rule(table, rule.id)


def update_rule(table: TableClient, rule_id: str, body: dict[str, Any], if_match: str | None, now: datetime, *,
                merge: bool) -> StoredRule:
    """Replace the rule (PUT) or change the given fields (PATCH, `merge`)."""
    current = get_rule(table, rule_id)
    _check_if_match(current, if_match)
    if merge:
        if not body:
            raise Problem(400, "nothing to change", field="body")
        stored = current.rule.to_json()
        changed = {**stored, **body}
        if isinstance(body.get("scope"), dict):  # PATCH {"scope": {"excludeTenants": [...]}} keeps the tenants
            changed["scope"] = {**stored["scope"], **body["scope"]}
        body = changed
    rule = validate_body(dict(body), rule_id)
    _refuse_duplicate(table, rule)
    if write_if_unchanged(table, {"PartitionKey": RULE_PARTITION, "RowKey": rule_id,
                                  "rule": json.dumps(rule.to_json()), "name": rule.name, "enabled": rule.enabled,
                                  "updatedAt": now}, current.etag, mode=UpdateMode.MERGE) is None:
        get_rule(table, rule_id)  # 404 when it was deleted meanwhile
        raise Problem(412, "the rule was changed meanwhile; read it again", field="If-Match")
    logger.info("notification rule %s updated", rule_id)
    return get_rule(table, rule_id)


def delete_rule(table: TableClient, rule_id: str, if_match: str | None) -> None:
    current = get_rule(table, rule_id)
    _check_if_match(current, if_match)
    if not delete_if_unchanged(table, RULE_PARTITION, rule_id, current.etag):
        raise Problem(412, "the rule was changed meanwhile; read it again", field="If-Match")
    logger.info("notification rule %s deleted", rule_id)


def _check_if_match(current: StoredRule, if_match: str | None) -> None:
    if if_match and if_match.strip() != "*" and if_match.strip() != current.etag:
        raise Problem(412, "the rule was changed since that ETag; read it again", field="If-Match")


# --- the test e-mail ---------------------------------------------------------------------------------------------


def _sample_tenant(rule: Rule, tenants: TableClient) -> dict[str, Any]:
    """The tenant a test e-mail names and links to: the rule's first tenant, else the first known tenant in
    scope; with none, a sample customer without an id (the link then opens the alert list of whichever
    tenant the reader signs in to)."""
    candidates: list[str] = list(rule.tenants) if rule.tenants != "all" else TenantRegistry(tenants).ids()
    tenant_id = next((t for t in candidates if rule.covers_tenant(t)), "")
    if not tenant_id:
        return {"RowKey": "", "displayName": "Sample customer"}
    return TenantRegistry(tenants).get(tenant_id) or {"RowKey": tenant_id, "displayName": "Sample customer"}


def sample_alert(rule: Rule, tenant_id: str, now: datetime, portal_host: str) -> dict[str, Any]:
    """A made-up alert that this rule would match, for the test e-mail: its title says it is a test and its
    ids are obviously fake, so nobody goes looking for it. It exists in no tenant, so its link is the
    portal's alert list (`/alerts`, with `?tid=` added as the rule's includeTenantLink says), where
    Defender shows the tenant's real alerts (https://learn.microsoft.com/en-us/defender-xdr/investigate-alerts)."""
    severity = rule.severities[-1] if rule.severities else "Medium"
    return {
        "PartitionKey": tenant_id, "alertId": SAMPLE_ALERT_ID, "severity": severity.lower(),
        "title": f"TEST ALERT (not real): sample notification for the rule \u201c{rule.name}\u201d",
        "category": "Test", "mitreTechniques": json.dumps([]),
        "deviceName": "sample-device.example.invalid",
        "deviceGroup": rule.device_groups[0] if rule.device_groups != "all" else "",
        "createdDateTime": now.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        "portalLink": f"{portal_host.rstrip('/')}/alerts",
        "description": "This made-up alert shows how alerts matching this rule are e-mailed. "
                       "It is not a real alert and needs no action.",
    }


def send_test(rule: Rule, tenants: TableClient, transport: Transport, rate_cap: SendRateCap | None,
              now: datetime, sender: Sender | None = None) -> list[dict[str, Any]]:
    """Send the test e-mail to each recipient; the outcome per recipient."""
    sender = sender or Sender.from_settings()
    tenant = _sample_tenant(rule, tenants)
    alert = sample_alert(rule, tenant["RowKey"], now, sender.portal_host)
    results = []
    for recipient in rule.recipients:
        if rate_cap is not None and rate_cap.try_acquire(1) < 1:
            outcome = SendOutcome("transient", "the send rate cap is reached", retry_after=60.0)
        else:
            message = render_alert_email(alert, tenant, rule, recipient, message_id=f"test-{uuid.uuid4().hex}",
                                         sender=sender, test=True)
            outcome = transport.send(message)
        results.append({"recipient": recipient, **outcome.to_json()})
    logger.info("notification rule %s: test e-mail sent to %d of %d recipients", rule.id,
                sum(r["status"] == "sent" for r in results), len(results))
    return results


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


# --- triggers ---------------------------------------------------------------------------------------------------


def _rule_response(stored: StoredRule, status: int = 200) -> func.HttpResponse:
    headers = {"ETag": stored.etag}
    if status == 201:
        headers["Location"] = f"/api/{ROUTE}/{stored.rule.id}"
    return json_response(stored.body(), status, headers)


def _body(req: func.HttpRequest) -> dict[str, Any]:
    body = req.get_body()
    check_transport(body, req.headers.get("Content-Type"), req.headers.get("Content-Length"), None, "")
    return parse_body(body)


def _rules_table() -> TableClient:
    return get_table_store().table(Table.NOTIFICATION_RULES)


def _now() -> datetime:
    return datetime.now(UTC)


@bp.function_name("list_notification_rules")
@bp.route(route=ROUTE, methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_notification_rules(req: func.HttpRequest) -> func.HttpResponse:
    """Every rule; `?tenantId=` keeps the rules that cover that tenant."""

    def handle() -> func.HttpResponse:
        tenant = req.params.get("tenantId")
        if tenant is not None and not is_guid(tenant):
            raise Problem(400, "must be a tenant GUID", field="tenantId")
        rules = list_rules(_rules_table())
        if tenant is not None:
            rules = [s for s in rules if s.rule.covers_tenant(tenant)]
        return json_response({"value": [s.body() for s in rules]})

    return run_api(handle, logger)


@bp.function_name("create_notification_rule")
@bp.route(route=ROUTE, methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def create_notification_rule(req: func.HttpRequest) -> func.HttpResponse:
    return run_api(lambda: _rule_response(create_rule(_rules_table(), _body(req), _now()), 201), logger)


@bp.function_name("get_notification_rule")
@bp.route(route=ROUTE + "/{ruleId}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_notification_rule(req: func.HttpRequest) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        return _rule_response(get_rule(_rules_table(), rule_id_from_route(req.route_params.get("ruleId", ""))))

    return run_api(handle, logger)


@bp.function_name("replace_notification_rule")
@bp.route(route=ROUTE + "/{ruleId}", methods=["PUT"], auth_level=func.AuthLevel.FUNCTION)
def replace_notification_rule(req: func.HttpRequest) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        rule_id = rule_id_from_route(req.route_params.get("ruleId", ""))
        return _rule_response(update_rule(_rules_table(), rule_id, _body(req), req.headers.get("If-Match"), _now(),
                                          merge=False))

    return run_api(handle, logger)


@bp.function_name("change_notification_rule")
@bp.route(route=ROUTE + "/{ruleId}", methods=["PATCH"], auth_level=func.AuthLevel.FUNCTION)
def change_notification_rule(req: func.HttpRequest) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        rule_id = rule_id_from_route(req.route_params.get("ruleId", ""))
        return _rule_response(update_rule(_rules_table(), rule_id, _body(req), req.headers.get("If-Match"), _now(),
                                          merge=True))

    return run_api(handle, logger)


@bp.function_name("delete_notification_rule")
@bp.route(route=ROUTE + "/{ruleId}", methods=["DELETE"], auth_level=func.AuthLevel.FUNCTION)
def delete_notification_rule(req: func.HttpRequest) -> func.HttpResponse:
    def handle() -> func.HttpResponse:
        delete_rule(_rules_table(), rule_id_from_route(req.route_params.get("ruleId", "")), req.headers.get("If-Match"))
        return func.HttpResponse(status_code=204)

    return run_api(handle, logger)


@bp.function_name("test_notification_rule")
@bp.route(route=ROUTE + "/{ruleId}/test", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def send_test_email(req: func.HttpRequest) -> func.HttpResponse:
    """Send the rule's test e-mail now (a disabled rule too: testing before enabling is the point)."""

    def handle() -> func.HttpResponse:
        rule = get_rule(_rules_table(), rule_id_from_route(req.route_params.get("ruleId", ""))).rule
        store = get_table_store()
        rate_cap = SendRateCap.from_settings(store.table(Table.SEND_RATE))
        results = send_test(rule, store.table(Table.TENANTS), get_transport(), rate_cap, _now(),
                            Sender.from_settings(get_settings()))
        return answer_for_test_email(rule.id, results)

    return run_api(handle, logger)
