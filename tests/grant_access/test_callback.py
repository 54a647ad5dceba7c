"""The consent callback `GET /api/consent/callback`: every outcome, the redirect shapes Entra sends (through
the local cloud's consent pages), state tampering and hostile input, over HTTP on the local host."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from local.run.cycle import finished_invocations


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def _with(url: str, **changes: str) -> str:
    """The callback URL with some parameters changed (None removes one)."""
    params = _query(url)
    params.update(changes)
    return urlencode({k: v for k, v in params.items() if v is not None})


def _state(invitation: dict) -> str:
    return _query(invitation["consentUrl"])["state"]


def _invitation(onboarding, invitation_id: str) -> dict:
    return onboarding.api("GET", f"invitations/{invitation_id}").json()


def _wait_status(onboarding, tenant: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = onboarding.tenant(tenant)
        if row["status"] == status or time.monotonic() > deadline:
            return row
        time.sleep(0.2)


def _verification_run(onboarding) -> None:
    """Run the verification timer and wait until the host records that invocation as ended."""
    before = finished_invocations(onboarding.stack, "verify_tenants")
    onboarding.run_verification()
    deadline = time.monotonic() + 60
    while finished_invocations(onboarding.stack, "verify_tenants") <= before:
        assert time.monotonic() < deadline, "the verification run did not finish"
        time.sleep(0.1)


def _page_is_safe(response) -> None:
    assert response.headers["Content-Type"].startswith("text/html")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "<script" not in response.text.lower() and "http" not in response.text.split("</title>")[1]


# --- outcomes --------------------------------------------------------------------------------------------------


def test_accepting_makes_the_tenant_active_and_says_access_granted(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite(tenantId=tenant, customerName="Contoso Ltd")

    page = onboarding.open(onboarding.answer_consent(invitation["consentUrl"]))

    assert page.status_code == 200 and "Access granted for Contoso Ltd" in page.text
    _page_is_safe(page)
    row = onboarding.tenant(tenant)
    assert row["status"] == "active" and row["displayName"] == "Contoso Ltd"
    assert [h["to"] for h in row["history"]] == ["verifying", "active"]
    recorded = _invitation(onboarding, invitation["id"])
    assert recorded["outcome"] == "accepted" and recorded["consentedTenantId"] == tenant


def test_declining_records_the_decline_and_says_how_to_try_again(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite(tenantId=tenant)

    redirect = onboarding.answer_consent(invitation["consentUrl"], "cancel")
    assert _query(redirect)["error"] == "consent_required"
    page = onboarding.open(redirect)

    assert page.status_code == 200 and "not granted" in page.text and "new consent link" in page.text
    recorded = _invitation(onboarding, invitation["id"])
    assert recorded["outcome"] == "declined" and recorded["outcomeReason"] == "consent_required AADSTS65004"
    assert onboarding.api("GET", f"tenants/{tenant}").status_code == 404


def test_a_declined_tenant_accepts_on_a_fresh_link(onboarding):
    tenant = onboarding.new_tenant()
    first = onboarding.invite(tenantId=tenant)
    onboarding.open(onboarding.answer_consent(first["consentUrl"], "cancel"))

    fresh = onboarding.api("POST", f"tenants/{tenant}/consent")
    assert fresh.status_code == 201 and fresh.json()["id"] != first["id"]
    page = onboarding.open(onboarding.answer_consent(fresh.json()["consentUrl"]))

    assert "Access granted" in page.text
    assert onboarding.tenant(tenant)["status"] == "active"


def test_the_v1_accept_shape_is_handled(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite(tenantId=tenant)

    redirect = onboarding.answer_consent(invitation["consentUrl"], v1=True)
    assert list(_query(redirect)) == ["tenant", "state", "admin_consent"]

    assert "Access granted" in onboarding.open(redirect).text
    assert onboarding.tenant(tenant)["status"] == "active"


def test_the_v1_cancel_shape_without_state_shows_a_decline_and_changes_nothing(onboarding):
    invitation = onboarding.invite()
    redirect = onboarding.answer_consent(invitation["consentUrl"], "cancel", v1=True)
    assert "state" not in _query(redirect) and _query(redirect)["error"] == "permission_denied"
    before = onboarding.snapshot()

    page = onboarding.open(redirect)

    assert page.status_code == 200 and "not granted" in page.text
    assert onboarding.snapshot() == before


def test_admin_consent_is_compared_case_insensitively(onboarding):
    tenant = onboarding.new_tenant()
    redirect = onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"])
    page = onboarding.callback(_with(redirect, admin_consent="true"))
    assert "Access granted" in page.text


def test_an_organizations_link_onboards_the_tenant_the_admin_signs_in_to(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite()
    redirect = onboarding.open(onboarding.answer_consent(invitation["consentUrl"], tenant=f"c{tenant[:8]}.example"))
    assert redirect.status_code == 302  # the sign-in that proves the tenant (test_consent_binding.py)
    page = onboarding.sign_in(redirect.headers["Location"], as_tenant=tenant)
    assert "Access granted" in page.text
    assert onboarding.tenant(tenant)["status"] == "active"


def test_a_domain_invitation_accepts_consent_from_that_domains_tenant(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite(tenantId=f"C{tenant[:8]}.EXAMPLE")
    assert "Access granted" in onboarding.open(onboarding.answer_consent(invitation["consentUrl"])).text
    assert onboarding.tenant(tenant)["status"] == "active"


def test_consent_that_has_not_propagated_leaves_the_tenant_verifying_until_a_later_retry(onboarding):
    tenant = onboarding.new_tenant(propagation_seconds=300)
    page = onboarding.open(onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"]))
    assert "Consent received" in page.text
    assert onboarding.tenant(tenant)["status"] == "verifying"

    _verification_run(onboarding)
    assert onboarding.tenant(tenant)["status"] == "verifying"

    onboarding.advance_cloud_clock(301)
    onboarding.run_verification()
    row = _wait_status(onboarding, tenant, "active")
    assert row["status"] == "active"
    assert [h["to"] for h in row["history"]] == ["verifying", "active"]


def test_verification_gives_up_after_the_limit(onboarding):
    tenant = onboarding.new_tenant(propagation_seconds=10**7)
    onboarding.open(onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"]))
    tenants = onboarding.tables().get_table_client("Tenants")
    row = tenants.get_entity("tenant", tenant)
    row["verifyingSince"] = datetime.now(UTC) - timedelta(hours=25)
    tenants.update_entity(row)

    onboarding.run_verification()

    row = _wait_status(onboarding, tenant, "verification_failed")
    assert row["status"] == "verification_failed"


def test_a_tenant_without_defender_is_not_licensed_with_a_clear_message(onboarding):
    tenant = onboarding.new_tenant(licensed=False)
    invitation = onboarding.invite(tenantId=tenant, alertSource="defender")

    redirect = onboarding.answer_consent(invitation["consentUrl"])
    assert "AADSTS650052" in _query(redirect)["error_description"]
    page = onboarding.open(redirect)

    assert "Microsoft Defender is not enabled" in page.text
    recorded = _invitation(onboarding, invitation["id"])
    assert recorded["outcome"] == "declined" and "AADSTS650052" in recorded["outcomeReason"]
    # An error redirect changes the invitation only (anyone with the link could forge one).
    assert onboarding.api("GET", f"tenants/{tenant}").status_code == 404


def test_a_disabled_feature_at_the_alert_api_makes_the_tenant_not_licensed(onboarding):
    tenant = onboarding.new_tenant()
    fault = onboarding.stack.cloud.control("POST", f"tenants/{tenant}/faults",
                                           json={"kind": "feature_disabled", "api": "graph"})
    assert fault.status_code == 201
    page = onboarding.open(onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"]))
    assert "Microsoft Defender is not enabled" in page.text
    assert onboarding.tenant(tenant)["status"] == "not_licensed"


def test_onboarding_rules_are_stored_scoped_to_the_tenant(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite(rules=[{"name": "SOC", "recipients": ["soc@mssp.example"],
                                           "severities": ["High", "Medium"], "scope": {"tenants": "all"}}])
    redirect = onboarding.open(onboarding.answer_consent(invitation["consentUrl"], tenant=tenant))
    onboarding.sign_in(redirect.headers["Location"], as_tenant=tenant)

    rows = list(onboarding.tables().get_table_client("NotificationRules").query_entities(
        "tenantId eq @t", parameters={"t": tenant}))
    assert len(rows) == 1
    rule = json.loads(rows[0]["rule"])
    assert rule["scope"] == {"tenants": [tenant], "excludeTenants": []}
    assert rule["severities"] == ["High", "Medium"] and rule["mode"] == "per-alert" and rule["id"] == rows[0]["RowKey"]


# --- replay and tampering -----------------------------------------------------------------------------------------


def test_the_identical_callback_url_shows_the_recorded_outcome_and_changes_nothing(onboarding):
    tenant = onboarding.new_tenant()
    redirect = onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"])
    onboarding.open(redirect)
    before = onboarding.snapshot()

    again = onboarding.open(redirect)

    assert again.status_code == 200 and "Access granted" in again.text
    assert onboarding.snapshot() == before


def test_the_identical_declined_url_shows_the_decline_again(onboarding):
    redirect = onboarding.answer_consent(onboarding.invite()["consentUrl"], "cancel")
    onboarding.open(redirect)
    before = onboarding.snapshot()
    assert "not granted" in onboarding.open(redirect).text
    assert onboarding.snapshot() == before


def test_a_used_state_with_other_parameters_is_rejected(onboarding):
    tenant = onboarding.new_tenant()
    redirect = onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"])
    onboarding.open(redirect)
    before = onboarding.snapshot()

    for query in (_with(redirect, scope="openid"), _with(redirect, error="access_denied"),
                  _with(redirect, tenant=onboarding.new_tenant())):
        page = onboarding.callback(query)
        assert page.status_code == 400 and "already been used" in page.text
    assert onboarding.snapshot() == before


def test_a_changed_tenant_is_rejected_and_the_link_still_works(onboarding):
    tenant = onboarding.new_tenant()
    redirect = onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"])
    before = onboarding.snapshot()

    page = onboarding.callback(_with(redirect, tenant=onboarding.new_tenant()))

    assert page.status_code == 400 and "different organization" in page.text
    assert onboarding.snapshot() == before
    assert "Access granted" in onboarding.open(redirect).text


@pytest.mark.parametrize("tenant_value", ["contoso.example", "not-a-guid", "",
                                          "{0b6f2a1c-3d4e-4f5a-8b9c-0d1e2f3a4b5c}"])
def test_a_tenant_that_is_not_a_guid_is_rejected(onboarding, tenant_value):
    redirect = onboarding.answer_consent(onboarding.invite()["consentUrl"], tenant=onboarding.new_tenant())
    before = onboarding.snapshot()
    page = onboarding.callback(_with(redirect, tenant=tenant_value))
    assert page.status_code == 400 and "not valid" in page.text
    assert onboarding.snapshot() == before


def test_an_altered_state_is_rejected(onboarding):
    tenant = onboarding.new_tenant()
    redirect = onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"])
    state = _query(redirect)["state"]
    before = onboarding.snapshot()
    for altered in (state[:-1] + ("A" if state[-1] != "A" else "B"), state[:-1], state + "x", "x" * 43):
        page = onboarding.callback(_with(redirect, state=altered))
        assert page.status_code == 400 and "not valid" in page.text
    assert onboarding.snapshot() == before


def test_a_missing_state_is_rejected(onboarding):
    tenant = onboarding.new_tenant()
    redirect = onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"])
    before = onboarding.snapshot()
    page = onboarding.callback(_with(redirect, state=None))
    assert page.status_code == 400 and "not valid" in page.text
    assert onboarding.snapshot() == before


def test_a_repeated_parameter_is_rejected(onboarding):
    tenant = onboarding.new_tenant()
    redirect = onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"])
    before = onboarding.snapshot()
    page = onboarding.callback(urlsplit(redirect).query + f"&tenant={onboarding.new_tenant()}")
    assert page.status_code == 400
    assert onboarding.snapshot() == before


def test_an_expired_link_is_rejected_and_says_what_to_do(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite(tenantId=tenant)
    redirect = onboarding.answer_consent(invitation["consentUrl"])
    table = onboarding.tables().get_table_client("Invitations")
    row = table.get_entity("invitation", invitation["id"])
    row["expiresAt"] = datetime.now(UTC) - timedelta(seconds=1)
    table.update_entity(row)
    before = onboarding.snapshot()

    page = onboarding.open(redirect)

    assert page.status_code == 400 and "expired" in page.text and "new consent link" in page.text
    assert onboarding.snapshot() == before
    assert _invitation(onboarding, invitation["id"])["outcome"] == "expired"


# --- hostile input -------------------------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "Co"'


def test_a_hostile_customer_name_is_escaped_on_every_page(onboarding):
    tenant = onboarding.new_tenant()
    accepted = onboarding.answer_consent(onboarding.invite(tenantId=tenant, customerName=HOSTILE)["consentUrl"])
    declined = onboarding.answer_consent(onboarding.invite(customerName=HOSTILE)["consentUrl"], "cancel")
    pages = [onboarding.open(accepted), onboarding.open(accepted), onboarding.open(declined),
             onboarding.open(declined)]
    for page in pages:
        _page_is_safe(page)
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page.text
        assert "<img" not in page.text


def test_a_hostile_error_description_is_never_reflected(onboarding):
    invitation = onboarding.invite()
    query = urlencode({"admin_consent": "True", "error": "access_denied<b>",
                       "error_description": f"AADSTS65004: {HOSTILE}", "error_uri": "javascript:alert(1)",
                       "state": _state(invitation)})
    page = onboarding.callback(query)
    _page_is_safe(page)
    assert "alert(" not in page.text and "<b>" not in page.text
    assert _invitation(onboarding, invitation["id"])["outcomeReason"] == "unrecognised_error AADSTS65004"


def test_a_hostile_query_without_state_is_never_reflected(onboarding):
    page = onboarding.callback(urlencode({"error": HOSTILE, "error_description": HOSTILE}))
    _page_is_safe(page)
    assert "alert(" not in page.text and "onerror" not in page.text


def test_concurrent_callbacks_with_one_state_complete_the_invitation_once(onboarding):
    from concurrent.futures import ThreadPoolExecutor

    tenant = onboarding.new_tenant()
    redirect = onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"])
    other = _with(redirect, tenant=onboarding.new_tenant())
    queries = [urlsplit(redirect).query, other] * 4
    with ThreadPoolExecutor(8) as pool:
        pages = list(pool.map(onboarding.callback, queries))

    # The identical URL shows the one recorded outcome (still being verified, or verified); the other is refused.
    assert all(p.status_code == 200 and ("Access granted" in p.text or "Consent received" in p.text)
               for p in pages[::2])
    assert all(p.status_code == 400 for p in pages[1::2])
    assert [h["to"] for h in onboarding.tenant(tenant)["history"]] == ["verifying", "active"]


def test_a_reload_after_a_failure_between_invitation_and_tenant_records_the_tenant(onboarding):
    tenant = onboarding.new_tenant()
    redirect = onboarding.answer_consent(onboarding.invite(tenantId=tenant)["consentUrl"])
    onboarding.open(redirect)
    # As if the first request had stopped right after completing the invitation.
    onboarding.tables().get_table_client("Tenants").delete_entity("tenant", tenant)

    page = onboarding.open(redirect)

    assert page.status_code == 200 and "Consent received" in page.text
    onboarding.run_verification()
    assert _wait_status(onboarding, tenant, "active")["status"] == "active"
