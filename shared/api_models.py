"""The request and response bodies of every HTTP route, declared once: the request models validate input
(shared.contract.validate: unknown fields refused, no coercion, sizes bounded, errors naming the field) and,
with the response models, make the OpenAPI document (shared.openapi, served at `GET /api/openapi.json`,
checked in as docs/openapi.json). The rule model is shared.rules.RuleInput (the webhook takes rules too).

Response models document what the handlers answer; the contract test (tests/test_contract.py) checks every
response of the running app against them.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from shared.contract import Email, ResponseModel, ShortText, StrictModel
from shared.rules import MAX_RULES, RuleInput
from shared.tenant_lookup import is_domain
from shared.validators import is_guid

AlertSource = Literal["graph", "defender"]
_ALERT_SOURCE = 'must be "graph" or "defender"'


def _tenant(value: str) -> str:
    if not (is_guid(value) or is_domain(value)):
        raise PydanticCustomError("value_error", "must be a tenant GUID or a verified domain name")
    return value.lower()


# --- requests ----------------------------------------------------------------------------------------------


class InvitationInput(StrictModel):
    """`POST /api/tenants`: the onboarding webhook's body. A `callbackUrl` is vetted after the model (https, a
    public address: grant_access.webhook.validate_request); `null` is the same as leaving a field out."""

    messages: ClassVar[dict[str, str]] = {
        "alertSource": _ALERT_SOURCE, "tenantId": "must be a tenant GUID or a verified domain name",
        "contactEmail": "must be an e-mail address", "callbackUrl": "must be an https URL",
        "rules": "must be a list of notification rules", "externalId": "must be a non-empty string"}

    customerName: ShortText = Field(description="the customer's name, shown on the consent pages")
    tenantId: Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_tenant)] | None = Field(
        default=None, description="the customer's tenant GUID or a verified domain of it")
    externalId: ShortText | None = Field(default=None, description="the onboarding system's id; a repeat with "
                                         "the same externalId answers the same invitation (200)")
    contactEmail: Email | None = None
    alertSource: AlertSource | None = Field(default=None, description='"graph" when left out')
    callbackUrl: str | None = Field(default=None, description="an https URL of a public host the result is "
                                    "POSTed to (signed like the webhook)")
    rules: Annotated[list[RuleInput], Field(max_length=MAX_RULES)] | None = Field(
        default=None, description="notification rules stored for the tenant once it consents (scoped to it)")


class TenantChanges(StrictModel):
    """`PATCH /api/tenants/{tenantId}`: the fields to change (at least one). An `apiHost` must be one of
    Microsoft's Defender API hosts (checked after the model); `null` or `""` clears it."""

    model_config = ConfigDict(**StrictModel.model_config, json_schema_extra={"minProperties": 1})
    messages: ClassVar[dict[str, str]] = {"alertSource": _ALERT_SOURCE, "disabled": "must be true or false",
                                          "apiHost": "must be a Microsoft Defender API host"}

    # Left out means unchanged; null is refused: the default None is never validated, so the type (and the
    # schema) stays non-nullable.
    displayName: ShortText = Field(default=None)  # type: ignore[assignment]
    alertSource: AlertSource = Field(default=None)  # type: ignore[arg-type]
    apiHost: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="e.g. https://eu.api.security.microsoft.com; null or \"\" clears it")
    disabled: bool = Field(default=None, description="true stops fetching; false checks access again")  # type: ignore[assignment]


# --- responses ---------------------------------------------------------------------------------------------


class Health(ResponseModel):
    status: Literal["healthy", "unhealthy"]
    storage: Literal["ok", "unavailable"]


class ProblemDetails(ResponseModel):
    """RFC 9457 problem details: `field` names the request field, parameter or header that was wrong."""

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    tenant: str | None = Field(default=None, description="the known tenant, on a 409")
    results: list[TestEmailResult] | None = Field(default=None, description="per recipient, on the test e-mail")


class Invitation(ResponseModel):
    id: str
    customerName: str | None
    externalId: str | None
    tenantId: str | None
    contactEmail: str | None
    alertSource: str | None
    callbackUrl: str | None
    rules: int = Field(description="how many notification rules the invitation carries")
    createdAt: str | None
    expiresAt: str | None
    outcome: Literal["pending", "accepted", "declined", "voided", "expired"]
    outcomeAt: str | None = None
    outcomeReason: str | None = None
    consentedTenantId: str | None = None
    href: str
    consentUrl: str | None = Field(default=None, description="the admin-consent link; only when created")
    portalAccessUrl: str | None = Field(default=None, description="the customer's portal-access guide, once "
                                       "consented")


class VisibilityLag(ResponseModel):
    windowHours: float | None
    count: int | None
    p50Seconds: float | None
    p95Seconds: float | None
    maxSeconds: float | None
    overlapSeconds: float | None
    beyondOverlap: int | None
    foundByReread: int | None
    at: str | None


class TenantHealth(ResponseModel):
    lastAttempt: str | None
    lastSuccess: str | None
    lastErrorClass: str | None
    lastError: str | None
    consecutiveFailures: int | None
    visibilityLag: VisibilityLag | None


class Tenant(ResponseModel):
    tenantId: str
    displayName: str | None
    status: str | None
    statusReason: str | None
    statusChangedAt: str | None
    alertSource: str | None
    apiHost: str | None
    health: TenantHealth
    portalUrl: str
    portalAccessHref: str | None = Field(default=None, description="the customer's guide to portal access")
    href: str


class TenantList(ResponseModel):
    value: list[Tenant]


class StatusChange(ResponseModel):
    at: str
    from_: str | None = Field(alias="from")
    to: str
    reason: str | None


class TenantDetail(Tenant):
    invitationId: str | None
    consentedAt: str | None
    lastVerification: str | None
    lastVerificationMessage: str | None
    history: list[StatusChange]


class PurgeLink(ResponseModel):
    instanceId: str
    href: str


class Offboarded(ResponseModel):
    tenantId: str
    status: Literal["offboarded"]
    note: str
    purge: PurgeLink | None = Field(default=None, description="with ?purge=true (202)")


class PurgeStatus(ResponseModel):
    tenantId: str
    instanceId: str
    runtimeStatus: str | None
    deleted: int
    createdTime: str | None
    lastUpdatedTime: str | None
    href: str


class Alert(ResponseModel):
    tenantId: str
    customerName: str | None
    alertId: str | None
    source: str | None
    title: str | None
    category: str | None
    severity: str | None
    status: str | None
    classification: str | None
    determination: str | None
    createdDateTime: str | None
    lastUpdateDateTime: str | None
    deviceName: str | None
    userName: str | None
    deviceGroup: str | None
    mitreTechniques: list[Any]
    incidentId: str | None
    detectionSource: str | None
    serviceSource: str | None
    portalLink: str | None
    payloadHash: str | None
    payloadTrimmed: bool
    storedAt: str | None
    payload: dict[str, Any] | None = Field(default=None, description="with includePayload=true")


class AlertPage(ResponseModel):
    value: list[Alert]
    continuation: str = Field(description="where the next page starts; send it back as ?continuation=")
    hasMore: bool
    nextLink: str | None = None


class RuleScope(ResponseModel):
    tenants: Literal["all"] | list[str]
    excludeTenants: list[str]


class Rule(ResponseModel):
    id: str
    name: str
    enabled: bool
    scope: RuleScope
    severities: list[str]
    deviceGroups: Literal["all"] | list[str]
    includeOrganizationName: bool
    includeTenantLink: bool
    includeDeviceInformation: bool
    recipients: list[str]
    mode: Literal["per-alert", "digest"]
    notifyOnSeverityRise: bool
    origin: str
    href: str


class RuleList(ResponseModel):
    value: list[Rule]


class TestEmailResult(ResponseModel):
    __test__ = False  # not a pytest class

    recipient: str
    status: Literal["sent", "transient", "permanent"]
    detail: str
    retry_after: float | None


class TestEmailResults(ResponseModel):
    __test__ = False

    ruleId: str
    results: list[TestEmailResult]


ProblemDetails.model_rebuild()
