"""Which tenant a consent completes for is proven, never taken from the redirect: attacks by a holder of a
consent link against other customers' tenants, and the sign-in that proves the tenant of an invitation
that named none. Over HTTP on the local host, with the local cloud's consent and sign-in pages."""

from __future__ import annotations

import time
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def _state(invitation: dict) -> str:
    return _query(invitation["consentUrl"])["state"]


def _invitation(onboarding, invitation_id: str) -> dict:
    return onboarding.api("GET", f"invitations/{invitation_id}").json()


def _tenant_row(onboarding, tenant: str) -> dict:
    row = onboarding.tables().get_table_client("Tenants").get_entity("tenant", tenant)
    return {**dict(row), "__etag": row.metadata["etag"]}


def _rules(onboarding) -> list[dict]:
    table = onboarding.tables().create_table_if_not_exists("NotificationRules")
    return [dict(r) for r in table.list_entities()]


def _active_customer(onboarding, **invite) -> str:
    tenant = onboarding.new_tenant(name="Victim Corp")
    page = onboarding.open(onboarding.answer_consent(onboarding.invite(tenantId=tenant, **invite)["consentUrl"]))
    assert "Access granted" in page.text
    return tenant


ATTACKER_RULES = [{"name": "exfiltrate", "recipients": ["attacker@evil.example"], "scope": {"tenants": "all"}}]


# --- attacks by a holder of a consent link --------------------------------------------------------------


def test_a_forged_redirect_naming_another_customer_does_not_rebind_it(onboarding):
    victim = _active_customer(onboarding)
    attacker = onboarding.invite(customerName="Attacker", rules=ATTACKER_RULES)
    before, rules_before = _tenant_row(onboarding, victim), _rules(onboarding)

    # Without visiting Entra: the redirect's `tenant` is whatever the caller writes.
    forged = onboarding.callback(urlencode({"admin_consent": "True", "tenant": victim, "state": _state(attacker)}))

    # It can only lead to a sign-in to that tenant, which the attacker cannot complete.
    assert forged.status_code == 302
    location = forged.headers["Location"]
    assert location.startswith(f"{onboarding.stack.cloud.url}/{victim}/oauth2/v2.0/authorize?")
    assert _query(location)["response_mode"] == "form_post" and _query(location)["nonce"]
    assert _tenant_row(onboarding, victim) == before and _rules(onboarding) == rules_before
    assert _invitation(onboarding, attacker["id"])["outcome"] == "pending"


def test_a_sign_in_to_the_attackers_own_tenant_does_not_complete_a_claim_on_another(onboarding):
    victim = _active_customer(onboarding)
    own = onboarding.new_tenant(name="Attacker Ltd")
    attacker = onboarding.invite(customerName="Attacker", rules=ATTACKER_RULES)
    forged = onboarding.callback(urlencode({"admin_consent": "True", "tenant": victim, "state": _state(attacker)}))
    before, rules_before = _tenant_row(onboarding, victim), _rules(onboarding)

    # The attacker cannot sign in to the victim's tenant, only to their own: they point the sign-in there.
    own_sign_in = forged.headers["Location"].replace(f"/{victim}/", f"/{own}/", 1)
    page = onboarding.sign_in(own_sign_in, as_tenant=own)

    assert page.status_code == 400 and "different organization" in page.text
    assert _tenant_row(onboarding, victim) == before and _rules(onboarding) == rules_before
    assert _invitation(onboarding, attacker["id"])["outcome"] == "pending"
    assert onboarding.api("GET", f"tenants/{own}").status_code == 404


def test_a_forged_redirect_cannot_bring_an_offboarded_tenant_back(onboarding):
    victim = _active_customer(onboarding)
    assert onboarding.api("DELETE", f"tenants/{victim}").status_code == 200
    attacker = onboarding.invite(customerName="Attacker")

    forged = onboarding.callback(urlencode({"admin_consent": "True", "tenant": victim, "state": _state(attacker)}))
    assert forged.status_code == 302
    # Even a genuine sign-in to that tenant (its own admin, with an invitation that named none) may not.
    page = onboarding.sign_in(forged.headers["Location"], as_tenant=victim)

    assert page.status_code == 409 and "Already connected" in page.text
    assert onboarding.tenant(victim)["status"] == "offboarded"
    assert _invitation(onboarding, attacker["id"])["outcome"] == "pending"


def test_a_forged_not_licensed_error_changes_the_invitation_only(onboarding):
    victim = _active_customer(onboarding)
    unused = onboarding.invite(customerName="Unused")
    before = _tenant_row(onboarding, victim)
    query = urlencode({"admin_consent": "True", "tenant": victim, "error": "invalid_client",
                       "error_description": "AADSTS650052: The app needs access to a service.",
                       "state": _state(unused)})

    page = onboarding.callback(query)

    assert "Microsoft Defender is not enabled" in page.text
    assert _tenant_row(onboarding, victim) == before
    assert _invitation(onboarding, unused["id"])["outcome"] == "declined"


def test_a_webhook_for_a_known_tenant_is_a_409_pointing_at_the_explicit_re_consent(onboarding):
    victim = _active_customer(onboarding)
    assert onboarding.api("DELETE", f"tenants/{victim}").status_code == 200

    response = onboarding.post_webhook({"customerName": "Again", "tenantId": victim})

    assert response.status_code == 409 and f"/api/tenants/{victim}/consent" in response.json()["detail"]


def test_an_explicit_re_consent_onboards_an_offboarded_tenant_again(onboarding):
    tenant = _active_customer(onboarding)
    assert onboarding.api("DELETE", f"tenants/{tenant}").status_code == 200

    fresh = onboarding.api("POST", f"tenants/{tenant}/consent")
    assert fresh.status_code == 201
    page = onboarding.open(onboarding.answer_consent(fresh.json()["consentUrl"]))

    assert "Access granted" in page.text
    row = onboarding.tenant(tenant)
    assert row["status"] == "active" and row["invitationId"] == fresh.json()["id"]


def test_when_one_invitation_completes_the_tenants_other_pending_invitations_are_voided(onboarding):
    tenant = onboarding.new_tenant()
    first, second = onboarding.invite(tenantId=tenant), onboarding.invite(tenantId=tenant)

    assert "Access granted" in onboarding.open(onboarding.answer_consent(first["consentUrl"])).text

    voided = _invitation(onboarding, second["id"])
    assert voided["outcome"] == "voided" and first["id"] in voided["outcomeReason"]
    # Its link is dead: neither a consent nor a forged error reaches the tenant through it.
    before = _tenant_row(onboarding, tenant)
    late = onboarding.open(onboarding.answer_consent(second["consentUrl"]))
    assert late.status_code == 400
    forged = onboarding.callback(urlencode({"error": "invalid_client", "state": _state(second),
                                            "error_description": "AADSTS650052: not enabled"}))
    assert forged.status_code == 400
    assert _tenant_row(onboarding, tenant) == before


# --- the sign-in that proves the tenant of an invitation that named none -------------------------------------


def test_an_invitation_without_a_tenant_completes_after_a_signed_in_admin_of_that_tenant(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite(customerName="Northwind", rules=[
        {"name": "SOC", "recipients": ["northwind-soc@mssp.example"], "scope": {"tenants": "all"}}])

    redirect = onboarding.open(onboarding.answer_consent(invitation["consentUrl"], tenant=tenant))
    assert redirect.status_code == 302
    assert onboarding.api("GET", f"tenants/{tenant}").status_code == 404  # nothing bound before the proof
    assert _rules(onboarding) == [] or all(r.get("scopeTenants") != tenant for r in _rules(onboarding))

    page = onboarding.sign_in(redirect.headers["Location"], as_tenant=tenant)

    assert page.status_code == 200 and "Access granted for Northwind" in page.text
    assert onboarding.tenant(tenant)["status"] == "active"
    recorded = _invitation(onboarding, invitation["id"])
    assert recorded["outcome"] == "accepted" and recorded["consentedTenantId"] == tenant
    stored = [r for r in _rules(onboarding) if "northwind-soc@mssp.example" in str(r)]
    assert len(stored) == 1 and tenant in str(stored[0])


def test_the_same_sign_in_posted_again_shows_the_recorded_outcome(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite()
    redirect = onboarding.open(onboarding.answer_consent(invitation["consentUrl"], tenant=tenant))
    fields = onboarding.sign_in_fields(redirect.headers["Location"], as_tenant=tenant)
    assert "Access granted" in onboarding.post_sign_in(fields).text
    before = onboarding.snapshot()

    again = onboarding.post_sign_in(fields)

    assert again.status_code == 200 and "Access granted" in again.text
    assert onboarding.snapshot() == before


@pytest.mark.parametrize("fault", ["foreign_key", "wrong_audience", "expired", "wrong_nonce"])
def test_an_id_token_that_entra_did_not_sign_for_this_link_is_refused(onboarding, fault):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite()
    redirect = onboarding.open(onboarding.answer_consent(invitation["consentUrl"], tenant=tenant))
    with onboarding.id_token_fault(fault):
        fields = onboarding.sign_in_fields(redirect.headers["Location"], as_tenant=tenant)
    before = onboarding.snapshot()

    page = onboarding.post_sign_in(fields)

    assert page.status_code == 400 and "could not be confirmed" in page.text
    assert onboarding.snapshot() == before


@pytest.mark.parametrize("fault", ["not_admin", "guest"])
def test_a_sign_in_by_a_user_who_could_not_have_consented_is_refused(onboarding, fault):
    # An admin consented through a link that named no tenant and closed the tab before the sign-in; a holder
    # of another link forges a redirect naming that tenant and gets any user (or a guest) of it to sign in.
    tenant = onboarding.new_tenant()
    onboarding.open(onboarding.answer_consent(onboarding.invite()["consentUrl"], tenant=tenant))
    attacker = onboarding.invite(customerName="Attacker", rules=ATTACKER_RULES)
    forged = onboarding.callback(urlencode({"admin_consent": "True", "tenant": tenant, "state": _state(attacker)}))
    with onboarding.id_token_fault(fault):
        fields = onboarding.sign_in_fields(forged.headers["Location"], as_tenant=tenant)
    before = onboarding.snapshot()

    page = onboarding.post_sign_in(fields)

    assert page.status_code == 403 and "administrator" in page.text
    assert onboarding.snapshot() == before
    assert onboarding.api("GET", f"tenants/{tenant}").status_code == 404


def test_a_sign_in_long_after_the_consent_redirect_is_refused(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite()
    redirect = onboarding.open(onboarding.answer_consent(invitation["consentUrl"], tenant=tenant))
    fields = onboarding.sign_in_fields(redirect.headers["Location"], as_tenant=tenant)
    table = onboarding.tables().get_table_client("Invitations")
    row = table.get_entity("invitation", invitation["id"])
    row["claimedAt"] = row["claimedAt"] - timedelta(minutes=16)  # as if the sign-in came 16 minutes later
    table.update_entity(row)
    before = onboarding.snapshot()

    page = onboarding.post_sign_in(fields)

    assert page.status_code == 400 and onboarding.snapshot() == before


def test_a_sign_in_without_a_consent_redirect_first_is_refused(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite()
    before = onboarding.snapshot()

    page = onboarding.post_sign_in({"id_token": "x.y.z", "state": _state(invitation)})

    assert page.status_code == 400 and onboarding.snapshot() == before
    assert onboarding.api("GET", f"tenants/{tenant}").status_code == 404


@pytest.mark.parametrize("body", [b"", b"state=", b"id_token=a&id_token=b&state=c", b"\xff\xfe=1", b"x" * 40_000])
def test_a_malformed_sign_in_post_is_a_400_page(onboarding, body):
    before = onboarding.snapshot()
    page = onboarding.post_sign_in(raw=body)
    assert page.status_code == 400 and page.headers["Content-Type"].startswith("text/html")
    assert onboarding.snapshot() == before


def test_a_cancelled_sign_in_changes_nothing_and_the_link_still_works(onboarding):
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite()
    redirect = onboarding.open(onboarding.answer_consent(invitation["consentUrl"], tenant=tenant))
    before = onboarding.snapshot()

    page = onboarding.post_sign_in({"error": "access_denied", "error_description": "AADSTS65004: declined",
                                    "state": _state(invitation)})

    assert page.status_code == 200 and "Sign-in not completed" in page.text
    assert onboarding.snapshot() == before
    assert "Access granted" in onboarding.sign_in(redirect.headers["Location"], as_tenant=tenant).text



def test_a_consent_interrupted_after_its_invitation_was_accepted_is_finished_by_the_verification_timer(onboarding):
    # As if the request had crashed right after marking the invitation accepted: no tenant row, no rules,
    # the tenant's other invitation still pending. The identical request is rarely sent again.
    tenant = onboarding.new_tenant()
    invitation = onboarding.invite(tenantId=tenant, rules=[
        {"name": "Interrupted", "recipients": ["interrupted@mssp.example"], "scope": {"tenants": "all"}}])
    other = onboarding.invite(tenantId=tenant)
    assert "Access granted" in onboarding.open(onboarding.answer_consent(invitation["consentUrl"])).text
    tables = onboarding.tables()
    tables.get_table_client("Tenants").delete_entity("tenant", tenant)
    for rule in [r for r in _rules(onboarding) if "interrupted@mssp.example" in str(r)]:
        tables.get_table_client("NotificationRules").delete_entity(rule["PartitionKey"], rule["RowKey"])
    invitations = tables.get_table_client("Invitations")
    pending = invitations.get_entity("invitation", other["id"])
    pending.update(outcome="pending", outcomeReason="", tenantId="")
    invitations.update_entity(pending)

    onboarding.run_verification()

    deadline = time.monotonic() + 30
    while (onboarding.api("GET", f"tenants/{tenant}").status_code == 404
           or onboarding.tenant(tenant)["status"] != "active"):
        assert time.monotonic() < deadline, "the timer never finished the interrupted consent"
        time.sleep(0.3)
    assert onboarding.tenant(tenant)["invitationId"] == invitation["id"]
    assert len([r for r in _rules(onboarding) if "interrupted@mssp.example" in str(r)]) == 1
    assert _invitation(onboarding, other["id"])["outcome"] == "voided"
