"""The OpenAPI 3.1 document of the app's HTTP API, made from the models of shared/api_models.py and
shared/rules.py (the same models that validate the requests): every route with its parameters, request body,
each documented response status with its schema, and the function-key security scheme (`x-functions-key`
header or `code` query parameter). Served at `GET /api/openapi.json`; docs/openapi.json is this document
checked in (`python -m local.openapi` writes it; a test fails when it differs).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared import api_models as m
from shared.contract import GUID_PATTERN
from shared.request_body import MAX_BODY_BYTES
from shared.rules import RuleInput

JSON, PROBLEM, NDJSON, HTML = "application/json", "application/problem+json", "application/x-ndjson", "text/html"
REF = "#/components/schemas/{model}"

_MODELS: tuple[type[BaseModel], ...] = (
    m.InvitationInput, m.TenantChanges, RuleInput, m.Health, m.ProblemDetails, m.Invitation, m.Tenant, m.TenantList,
    m.TenantDetail, m.Offboarded, m.PurgeStatus, m.Alert, m.AlertPage, m.Rule, m.RuleList, m.TestEmailResults)

_STATUS_TEXT = {
    200: "OK", 201: "Created", 202: "Accepted (the purge runs in the background)", 204: "Deleted",
    302: "Redirect (to the sign-in that proves which tenant consented)", 400: "A bad request; `field` names it",
    401: "No valid function key (an empty body), or a bad webhook signature (problem+json naming the header)",
    403: "Forbidden", 404: "Not found", 409: "Conflict", 412: "The resource changed since the If-Match ETag",
    413: f"The body is larger than {MAX_BODY_BYTES} bytes", 415: "The body must be application/json",
    422: "The mail server refused a recipient", 500: "The service is not configured correctly",
    503: "A dependency is unavailable; try again later",
}


@dataclass(frozen=True)
class Op:
    """One operation: its method and path, the models of its bodies and what it may answer."""

    name: str
    method: str
    path: str
    summary: str
    tag: str
    responses: dict[int, str | None]  # status -> schema name (None: no body)
    request: str | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    anonymous: bool = False
    media: str = JSON  # of the success responses
    extra_success: dict[str, Any] = field(default_factory=dict)  # more media types of the 200


def _path(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": schema}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string"}}


_GUID = {"type": "string", "pattern": GUID_PATTERN}
TENANT_ID = _path("tenantId", "the customer's tenant GUID (400 when it is not one)", _GUID)
RULE_ID = _path("ruleId", "the rule id (32 lower-case hex; 404 when it is none)",
                {"type": "string", "pattern": "^[0-9a-f]{32}$"})
IF_MATCH = _header("If-Match", "the rule's ETag (or `*`): the change is made only if the rule is unchanged")
_SEVERITY = "informational|low|medium|high|unknown|unknownFutureValue"
_STATUS = "new|inProgress|resolved|unknown|unknownFutureValue"
ALERT_QUERY = [
    _query("tenantId", "only this tenant's alerts", _GUID),
    _query("severity", "a comma-separated list of severities (case-insensitive)",
           {"type": "string", "pattern": f"^({_SEVERITY})(,({_SEVERITY}))*$"}),
    _query("status", "a comma-separated list of statuses (case-insensitive)",
           {"type": "string", "pattern": f"^({_STATUS})(,({_STATUS}))*$"}),
    _query("pageSize", "alerts per page (at most 100 with includePayload)",
           {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
    _query("continuation", "the token of the previous page (it carries that page's filters)",
           {"type": "string", "minLength": 1}),
    _query("includePayload", "include each alert's stored Microsoft payload", {"type": "boolean", "default": False}),
]
PROBLEMS = "ProblemDetails"

OPERATIONS: tuple[Op, ...] = (
    Op("health", "get", "/health", "Liveness and a storage check", "operations",
       {200: "Health", 503: "Health"}, anonymous=True),
    Op("get_openapi", "get", "/openapi.json", "This document", "operations", {200: None}),
    Op("create_invitation", "post", "/tenants", "Onboarding webhook: an invitation and its admin-consent link",
       "onboarding", {201: "Invitation", 200: "Invitation", 400: PROBLEMS, 401: PROBLEMS, 409: PROBLEMS,
                      413: PROBLEMS, 415: PROBLEMS, 500: PROBLEMS, 503: PROBLEMS},
       request="InvitationInput",
       parameters=[_header("X-Signature-Timestamp", "Unix seconds the request was signed at (required when the "
                           "app has ONBOARDING_WEBHOOK_SECRET)"),
                   _header("X-Signature-SHA256", "`sha256=` HMAC-SHA256 of `<timestamp>.<body>` with the webhook "
                           "secret (required when the app has ONBOARDING_WEBHOOK_SECRET)")]),
    Op("get_invitation", "get", "/invitations/{invitationId}", "An invitation and its outcome", "onboarding",
       {200: "Invitation", 404: PROBLEMS, 500: PROBLEMS, 503: PROBLEMS},
       parameters=[_path("invitationId", "the invitation id (32 lower-case hex; 404 when it is none)",
                         {"type": "string"})]),
    Op("portal_access", "get", "/invitations/{invitationId}/portal-access", "The customer's guide to giving the "
       "MSSP's analysts portal access, once consented (a page for a browser)", "consent", {200: None, 404: None,
                                                                                          503: None},
       parameters=[_path("invitationId", "the invitation id", {"type": "string"})], anonymous=True, media=HTML),
    Op("consent_callback", "get", "/consent/callback", "Where Entra sends the customer's admin after consent "
       "(a page for a browser)", "consent", {200: None, 302: None, 400: None, 403: None, 409: None, 503: None},
       anonymous=True, media=HTML),
    Op("consent_sign_in", "post", "/consent/callback", "Where Entra posts the sign-in's id_token (form_post; "
       "a page for a browser)", "consent", {200: None, 302: None, 400: None, 403: None, 409: None, 503: None},
       anonymous=True, media=HTML),
    Op("list_tenants", "get", "/tenants", "Every known customer tenant", "tenants",
       {200: "TenantList", 500: PROBLEMS, 503: PROBLEMS}),
    Op("get_tenant", "get", "/tenants/{tenantId}", "One tenant with its status history", "tenants",
       {200: "TenantDetail", 400: PROBLEMS, 404: PROBLEMS, 500: PROBLEMS, 503: PROBLEMS}, parameters=[TENANT_ID]),
    Op("patch_tenant", "patch", "/tenants/{tenantId}", "Change display name, alert source, API host, or "
       "disable/enable fetching", "tenants",
       {200: "TenantDetail", 400: PROBLEMS, 404: PROBLEMS, 409: PROBLEMS, 413: PROBLEMS, 415: PROBLEMS,
        500: PROBLEMS, 503: PROBLEMS}, request="TenantChanges", parameters=[TENANT_ID]),
    Op("offboard_tenant", "delete", "/tenants/{tenantId}", "Offboard: fetching stops; ?purge=true also deletes "
       "the stored alerts", "tenants", {200: "Offboarded", 202: "Offboarded", 400: PROBLEMS, 404: PROBLEMS,
                                        500: PROBLEMS, 503: PROBLEMS},
       parameters=[TENANT_ID, _query("purge", "also delete the tenant's stored alerts (in the background)",
                                     {"type": "boolean", "default": False})]),
    Op("get_tenant_purge", "get", "/tenants/{tenantId}/purge", "Progress of the purge of an offboarded tenant's "
       "alerts", "tenants", {200: "PurgeStatus", 400: PROBLEMS, 404: PROBLEMS}, parameters=[TENANT_ID]),
    Op("fresh_consent", "post", "/tenants/{tenantId}/consent", "A fresh invitation and consent link for a known "
       "tenant", "tenants", {201: "Invitation", 400: PROBLEMS, 404: PROBLEMS, 409: PROBLEMS, 500: PROBLEMS,
                             503: PROBLEMS}, parameters=[TENANT_ID]),
    Op("list_alerts", "get", "/alerts", "SIEM pull: every customer's alerts in stored order, a page at a time "
       "(NDJSON with Accept: application/x-ndjson)", "alerts", {200: "AlertPage", 400: PROBLEMS, 500: PROBLEMS,
                                                                  503: PROBLEMS},
       parameters=ALERT_QUERY, extra_success={NDJSON: {"schema": {"type": "string", "description":
                                                                    "one Alert object per line"}}}),
    Op("list_notification_rules", "get", "/notification-rules", "Every notification rule", "notification rules",
       {200: "RuleList", 400: PROBLEMS, 500: PROBLEMS, 503: PROBLEMS},
       parameters=[_query("tenantId", "only the rules that cover this tenant", _GUID)]),
    Op("create_notification_rule", "post", "/notification-rules", "Create a rule", "notification rules",
       {201: "Rule", 400: PROBLEMS, 409: PROBLEMS, 413: PROBLEMS, 415: PROBLEMS, 500: PROBLEMS, 503: PROBLEMS},
       request="RuleInput"),
    Op("get_notification_rule", "get", "/notification-rules/{ruleId}", "One rule (with its ETag)",
       "notification rules", {200: "Rule", 400: PROBLEMS, 404: PROBLEMS, 500: PROBLEMS, 503: PROBLEMS},
       parameters=[RULE_ID]),
    Op("replace_notification_rule", "put", "/notification-rules/{ruleId}", "Replace a rule",
       "notification rules", {200: "Rule", 400: PROBLEMS, 404: PROBLEMS, 409: PROBLEMS, 412: PROBLEMS,
                              413: PROBLEMS, 415: PROBLEMS, 500: PROBLEMS, 503: PROBLEMS},
       request="RuleReplacement", parameters=[RULE_ID, IF_MATCH]),
    Op("change_notification_rule", "patch", "/notification-rules/{ruleId}", "Change some of a rule's fields",
       "notification rules", {200: "Rule", 400: PROBLEMS, 404: PROBLEMS, 409: PROBLEMS, 412: PROBLEMS,
                              413: PROBLEMS, 415: PROBLEMS, 500: PROBLEMS, 503: PROBLEMS},
       request="RuleChanges", parameters=[RULE_ID, IF_MATCH]),
    Op("delete_notification_rule", "delete", "/notification-rules/{ruleId}", "Delete a rule",
       "notification rules", {204: None, 400: PROBLEMS, 404: PROBLEMS, 412: PROBLEMS, 500: PROBLEMS,
                              503: PROBLEMS}, parameters=[RULE_ID, IF_MATCH]),
    Op("test_notification_rule", "post", "/notification-rules/{ruleId}/test", "Send the rule's test e-mail now",
       "notification rules", {200: "TestEmailResults", 400: PROBLEMS, 404: PROBLEMS, 422: PROBLEMS,
                              500: PROBLEMS, 503: PROBLEMS}, parameters=[RULE_ID]),
)


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema([(model, "validation") for model in _MODELS], ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    rule = schemas["RuleInput"]
    # PUT takes a rule as GET shows it: its own id, and href and origin, which are ignored.
    schemas["RuleReplacement"] = {**copy.deepcopy(rule), "title": "RuleReplacement", "properties": {
        **rule["properties"], "id": {"type": "string", "description": "the rule's own id (from the URL)"},
        "href": {"type": "string", "description": "ignored"}, "origin": {"type": "string", "description": "ignored"}}}
    # PATCH takes any of the fields (at least one); a scope given is merged into the stored one.
    changes = {k: v for k, v in copy.deepcopy(schemas["RuleReplacement"]).items() if k != "required"}
    schemas["RuleChanges"] = {**changes, "title": "RuleChanges", "minProperties": 1}
    return schemas


def _operation(op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.name, "summary": op.summary, "tags": [op.tag]}
    if op.parameters:
        out["parameters"] = op.parameters
    if op.request:
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": {"$ref": REF.format(model=op.request)}}}}
    responses: dict[str, Any] = {}
    for status, schema in sorted(op.responses.items()):
        entry: dict[str, Any] = {"description": _STATUS_TEXT.get(status, "")}
        if schema is not None:
            media = PROBLEM if schema == PROBLEMS else (op.media if status < 300 else JSON)
            entry["content"] = {media: {"schema": {"$ref": REF.format(model=schema)}}}
            if status == 200:
                entry["content"].update(op.extra_success)
        elif op.media == HTML and status != 302:
            entry["content"] = {HTML: {"schema": {"type": "string"}}}
        elif op.name == "get_openapi":
            entry["content"] = {JSON: {"schema": {"type": "object"}}}
        responses[str(status)] = entry
    if not op.anonymous:
        responses.setdefault("401", {"description": _STATUS_TEXT[401]})
    out["responses"] = responses
    if op.anonymous:
        out["security"] = []
    return out


@cache
def _document_text() -> str:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    document = {
        "openapi": "3.1.0",
        "info": {"title": "MSSP alerts API", "version": "1",
                 "description": "Onboarding (webhook, consent), tenant management, the SIEM pull API and the "
                                "notification rules API. Errors are RFC 9457 problem+json naming the field."},
        "servers": [{"url": "/api"}],
        "security": [{"functionKey": []}, {"functionKeyQuery": []}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                                "description": "an Azure Functions function key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code",
                                     "description": "the same key as a query parameter"},
            },
        },
    }
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy)."""
    parsed: dict[str, Any] = json.loads(_document_text())
    return parsed


def document_text() -> str:
    """The document as docs/openapi.json holds it."""
    return _document_text()
