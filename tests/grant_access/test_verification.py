"""Who a verification failure belongs to, on the local stack: the MSSP's own credential failing never fails
a customer (no status, no onboarding report, no use of the customer's verification time) and raises the
one MSSP credential incident; AADSTS700016 right after consent is retried, and consent_revoked only once it
has persisted through the propagation window."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from local.run.cycle import finished_invocations, fire_timer
from shared.access_check import APP_NOT_FOUND_SINCE, APP_NOT_FOUND_WINDOW
from tests.grant_access.conftest import Onboarding, start_onboarding
from tests.grant_access.result_runs import finished_result_runs
from tests.grant_access.test_result_callback import Receiver

REPORT_WAIT = 8.0  # seconds a result report would take at most to arrive (the first POST is immediate)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Onboarding, Receiver]]:
    onboarding = start_onboarding(Path(tmp_path_factory.mktemp("verification")), OUTBOUND_ALLOW_LOOPBACK="true")
    receiver = Receiver(onboarding.stack.cloud.ca_path.parent)
    yield onboarding, receiver
    receiver.stop()
    onboarding.stack.stop()


def _run(onboarding: Onboarding, function: str) -> None:
    """Run a timer function through the admin API and wait until that invocation has ended."""
    before = finished_invocations(onboarding.stack, function)
    fire_timer(onboarding.stack, function)
    deadline = time.monotonic() + 60
    while finished_invocations(onboarding.stack, function) <= before:
        assert time.monotonic() < deadline, f"{function} did not finish"
        time.sleep(0.1)


def _reports(receiver: Receiver, invitation_id: str, *, wait_for: int, deadline: float = REPORT_WAIT) -> list[dict]:
    """The results POSTed about an invitation, once `wait_for` have arrived or the deadline passed."""
    end = time.monotonic() + deadline
    while True:
        bodies = [json.loads(raw) for _, raw in list(receiver.received)]
        found = [body for body in bodies if body["invitationId"] == invitation_id]
        if len(found) >= wait_for or time.monotonic() > end:
            return found
        time.sleep(0.1)


def _row(onboarding: Onboarding, tenant: str) -> dict[str, Any]:
    return dict(onboarding.tables().get_table_client("Tenants").get_entity("tenant", tenant))


def _age(onboarding: Onboarding, tenant: str, by: timedelta, *columns: str) -> None:
    """Move timestamps of the tenant's row into the past, as if that much time had passed (the host's clock
    is real time and cannot be moved)."""
    tenants = onboarding.tables().get_table_client("Tenants")
    row = tenants.get_entity("tenant", tenant)
    for column in columns:
        row[column] = row[column] - by
    tenants.update_entity(row)


def _incidents(onboarding: Onboarding) -> list[dict[str, Any]]:
    return [dict(r) for r in onboarding.tables().get_table_client("Incidents").list_entities()]


def _restart_with_secret(onboarding: Onboarding, secret: str) -> None:
    onboarding.stack.settings["MSSP_APP_CLIENT_SECRET"] = secret
    assert onboarding.stack.host is not None
    onboarding.stack.host.stop()
    onboarding.stack.start_host()


def _consent(onboarding: Onboarding, receiver: Receiver, tenant: str, path: str) -> dict[str, Any]:
    invitation = onboarding.invite(tenantId=tenant, callbackUrl=receiver.url(path))
    page = onboarding.open(onboarding.answer_consent(invitation["consentUrl"]))
    assert page.status_code == 200
    return invitation


def test_a_wrong_mssp_secret_never_fails_the_customer_and_verification_resumes_once_it_is_fixed(env):
    onboarding, receiver = env
    right_secret = onboarding.stack.settings["MSSP_APP_CLIENT_SECRET"]
    tenant = onboarding.new_tenant()
    _restart_with_secret(onboarding, "not-the-secret")
    try:
        invitation = _consent(onboarding, receiver, tenant, "/mssp-secret")
        row = _row(onboarding, tenant)
        assert row["status"] == "verifying" and "AADSTS7000215" in row["lastVerificationMessage"]
        assert row["verifyAttempts"] == 0

        # 25 hours pass (VERIFICATION_TIMEOUT is 24 h), all of them with the MSSP's secret wrong.
        _age(onboarding, tenant, timedelta(hours=25), "consentedAt", "verifyingSince", "msspFailingSince")
        _run(onboarding, "verify_tenants")
        _run(onboarding, "verify_tenants")

        row = _row(onboarding, tenant)
        assert row["status"] == "verifying" and row["verifyAttempts"] == 0
        assert "MSSP" in row["lastVerificationMessage"]
        assert onboarding.tenant(tenant)["history"][-1]["to"] == "verifying"
        # Nothing reported to the onboarding system: no report was started by the consent or the runs above.
        assert finished_result_runs(onboarding.stack, invitation["id"]) == []
        assert _reports(receiver, invitation["id"], wait_for=0) == []

        _run(onboarding, "ops_notices")
        _run(onboarding, "ops_notices")
        incidents = _incidents(onboarding)
        [record] = [r for r in incidents if (r["PartitionKey"], r["RowKey"]) == ("mssp", "credential")]
        assert record["open"] is True and record["code"] == "AADSTS7000215" and record["count"] == 3
        [notice] = [r for r in incidents if r["PartitionKey"] == "notice"]
        assert (notice["RowKey"], notice["open"], notice["occurrences"]) == ("mssp_credential|mssp", True, 1)
    finally:
        _restart_with_secret(onboarding, right_secret)

    # The first check with a working credential meets a transient API failure: the customer's own time
    # is what counts, and almost none of it has passed, so the tenant is still verifying, not failed.
    fault = onboarding.stack.cloud.control("POST", f"tenants/{tenant}/faults",
                                           json={"kind": "server_error", "api": "graph", "count": 1})
    assert fault.status_code == 201
    _run(onboarding, "verify_tenants")
    row = _row(onboarding, tenant)
    assert row["status"] == "verifying" and row["verifyAttempts"] == 1
    assert row["verifyPausedSeconds"] >= timedelta(hours=25).total_seconds()

    _run(onboarding, "verify_tenants")
    assert _row(onboarding, tenant)["status"] == "active"
    [report] = _reports(receiver, invitation["id"], wait_for=1)
    assert report["status"] == "active"
    record = dict(onboarding.tables().get_table_client("Incidents").get_entity("mssp", "credential"))
    assert record["open"] is False


def test_app_not_found_right_after_consent_is_retried_and_active_once_it_clears(env):
    onboarding, receiver = env
    tenant = onboarding.new_tenant()
    fault = onboarding.stack.cloud.control("POST", f"tenants/{tenant}/faults",
                                           json={"kind": "consent_revoked", "api": "token"})
    assert fault.status_code == 201
    invitation = _consent(onboarding, receiver, tenant, "/propagating")
    _run(onboarding, "verify_tenants")
    row = _row(onboarding, tenant)
    assert row["status"] == "verifying" and "AADSTS700016" in row["lastVerificationMessage"]
    assert finished_result_runs(onboarding.stack, invitation["id"]) == []  # no report started
    assert _reports(receiver, invitation["id"], wait_for=0) == []

    assert onboarding.stack.cloud.control("DELETE", f"tenants/{tenant}/faults").status_code == 204
    _run(onboarding, "verify_tenants")
    row = _row(onboarding, tenant)
    assert row["status"] == "active" and APP_NOT_FOUND_SINCE not in row
    [report] = _reports(receiver, invitation["id"], wait_for=1)
    assert report["status"] == "active"


def test_app_not_found_that_persists_through_the_propagation_window_is_consent_revoked(env):
    onboarding, receiver = env
    tenant = onboarding.new_tenant(propagation_seconds=10**7)  # the consent never reaches the token service
    invitation = _consent(onboarding, receiver, tenant, "/never")
    _run(onboarding, "verify_tenants")
    row = _row(onboarding, tenant)
    assert row["status"] == "verifying" and isinstance(row[APP_NOT_FOUND_SINCE], type(row["consentedAt"]))

    _age(onboarding, tenant, APP_NOT_FOUND_WINDOW + timedelta(seconds=1), "consentedAt", "verifyingSince",
         APP_NOT_FOUND_SINCE)
    _run(onboarding, "verify_tenants")
    row = _row(onboarding, tenant)
    assert row["status"] == "consent_revoked" and "AADSTS700016" in row["statusReason"]
    [report] = _reports(receiver, invitation["id"], wait_for=1)
    assert report["status"] == "consent_revoked"
