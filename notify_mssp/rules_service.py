"""The notification rules service behind the rules API (`/api/notification-rules`, notify_mssp.rules_http):
create, read, replace, change and delete rules, and the test e-mail, which goes to the rule's recipients as
Defender's "Send test email" does: about a made-up alert that says it is one, linking to the tenant's alert
list in the portal (the sample has no page of its own).

Bodies are validated by the one rule validation (shared.rules.validate_rule), so errors are Problems naming
the field. A rule carries its table ETag: `If-Match` on PUT, PATCH and DELETE makes a change conditional
(412 when someone changed the rule meanwhile). Two rules with the same name and the same scope are refused
(409), and so is a rule beyond MAX_RULES. The rows are read and written through shared.rules.RuleRepository.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import datetime
from typing import Any

from azure.data.tables import TableClient

from notify_mssp.email import Sender, render_alert_email
from notify_mssp.ratecap import SendRateCap
from notify_mssp.transports import SendOutcome, Transport
from shared.problems import Problem
from shared.rules import Rule, RuleRepository, StoredRule
from shared.tenants import TenantRegistry

logger = logging.getLogger(__name__)

ROUTE = "notification-rules"
MAX_RULES = 1000
_RULE_ID = re.compile(r"^[0-9a-f]{32}$")
SAMPLE_ALERT_ID = "test-alert-00000000-sample-not-real"


def rule_body(stored: StoredRule) -> dict[str, Any]:
    """A stored rule as the API shows it."""
    return {**stored.rule.to_json(), "origin": stored.row.get("origin") or "api",
            "href": f"/api/{ROUTE}/{stored.rule.id}"}


def rule_id_from_route(value: str) -> str:
    if not _RULE_ID.fullmatch(value):
        raise Problem(404, "no such notification rule", field="ruleId")
    return value


def get_rule(rules: RuleRepository, rule_id: str) -> StoredRule:
    stored = rules.get(rule_id)
    if stored is None:
        raise Problem(404, "no such notification rule", field="ruleId")
    return stored


def list_rules(rules: RuleRepository, tenant_id: str | None = None) -> list[StoredRule]:
    """Every usable rule by name; with `tenant_id`, those that cover that tenant."""
    found = rules.all()
    return found if tenant_id is None else [s for s in found if s.rule.covers_tenant(tenant_id)]


def _scope_key(rule: Rule) -> tuple[object, ...]:
    return (rule.tenants if rule.tenants == "all" else tuple(sorted(rule.tenants)), tuple(sorted(rule.exclude_tenants)))


def _refuse_duplicate(rules: RuleRepository, rule: Rule) -> None:
    for other in rules.all():
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


def create_rule(rules: RuleRepository, body: dict[str, Any], now: datetime) -> StoredRule:
    if "id" in body:
        raise Problem(400, "rule ids are set by the service", field="id")
    rule = validate_body(body, uuid.uuid4().hex)
    if rules.count() >= MAX_RULES:
        raise Problem(409, f"at most {MAX_RULES} notification rules; delete one first", field="body")
    _refuse_duplicate(rules, rule)
    rules.create(rule, now)
    logger.info("notification rule %s created", rule.id)
    return get_rule(rules, rule.id)


def update_rule(rules: RuleRepository, rule_id: str, body: dict[str, Any], if_match: str | None, now: datetime, *,
                merge: bool) -> StoredRule:
    """Replace the rule (PUT) or change the given fields (PATCH, `merge`)."""
    current = get_rule(rules, rule_id)
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
    _refuse_duplicate(rules, rule)
    if not rules.replace_if_unchanged(rule, current.etag, now):
        get_rule(rules, rule_id)  # 404 when it was deleted meanwhile
        raise Problem(412, "the rule was changed meanwhile; read it again", field="If-Match")
    logger.info("notification rule %s updated", rule_id)
    return get_rule(rules, rule_id)


def delete_rule(rules: RuleRepository, rule_id: str, if_match: str | None) -> None:
    current = get_rule(rules, rule_id)
    _check_if_match(current, if_match)
    if not rules.delete_if_unchanged(rule_id, current.etag):
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
              now: datetime, sender: Sender) -> list[dict[str, Any]]:
    """Send the test e-mail to each recipient; the outcome per recipient."""
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
