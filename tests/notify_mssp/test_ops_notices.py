"""Operational notices to the ops address, through the real ops timer on the local host and MailDev: one
notice per incident, a notice when it clears, none repeated after a host restart; each condition (access
lost, failing runs, silence, backfill count, the MSSP credential failing or expiring) from stored state."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

OPS = "ops@mssp.example"
NEVER = "0 0 0 1 1 *"
EXPIRES = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def notify_settings() -> dict[str, str]:
    # The ops timer never fires by itself: `run_ops_check` fires it and waits for an invocation to end, and a
    # scheduled check ending first (at a 5-minute mark) would return before the fired one had looked.
    return {"OPS_EMAIL": OPS, "FETCH_ALERTS_SCHEDULE": NEVER, "OPS_NOTICES_SCHEDULE": NEVER,
            "OPS_FAILING_RUNS": "3", "OPS_SILENT_HOURS": "6", "MSSP_APP_CREDENTIAL": "secret",
            "MSSP_CREDENTIAL_EXPIRES_AT": EXPIRES, "OPS_CREDENTIAL_WARNING_DAYS": "30"}


def run_ops_check(world) -> None:
    """Run the ops timer now through the admin API and wait until that invocation has finished."""
    def finished() -> int:
        counts = world.host.admin("GET", "local/stats").json()["invocations"]["functions"].get("ops_notices", {})
        return int(counts.get("succeeded", 0)) + int(counts.get("failed", 0)) + int(counts.get("timed_out", 0))

    before = finished()
    assert world.host.admin("POST", "functions/ops_notices", json={"input": ""}).status_code == 202
    deadline = time.monotonic() + 30
    while finished() <= before:
        assert time.monotonic() < deadline, "the ops timer did not finish"
        time.sleep(0.1)


def notices(world, *words: str) -> list[dict[str, Any]]:
    return [m for m in world.emails_to(OPS) if all(w in m["subject"] for w in words)]


def put_tenant(world, **columns: Any) -> tuple[str, str]:
    tenant_id, name = str(uuid.uuid4()), f"Customer {uuid.uuid4().hex[:8]}"
    world.table("Tenants").upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "displayName": name,
                                          "status": "active", "statusChangedAt": datetime.now(UTC), **columns})
    return tenant_id, name


def change_tenant(world, tenant_id: str, **columns: Any) -> None:
    world.table("Tenants").upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, **columns})


def test_a_revoked_consent_is_noticed_once_and_not_again_after_a_host_restart(world):
    _, name = put_tenant(world, status="consent_revoked", statusReason="ingestion: AADSTS700016")
    run_ops_check(world)
    run_ops_check(world)
    (notice,) = notices(world, name, "consent")
    assert "AADSTS700016" in notice["text"] and notice["text"].strip()
    world.stack.host.stop()
    world.stack.start_host()
    run_ops_check(world)
    assert len(notices(world, name)) == 1


def test_a_cleared_incident_gets_one_clearing_notice(world):
    tenant_id, name = put_tenant(world, status="permission_missing")
    run_ops_check(world)
    assert len(notices(world, name, "permission")) == 1
    change_tenant(world, tenant_id, status="active")
    run_ops_check(world)
    run_ops_check(world)
    assert len(notices(world, name, "resolved")) == 1 and len(notices(world, name)) == 2


def test_an_incident_that_returns_after_clearing_is_noticed_again(world):
    tenant_id, name = put_tenant(world, status="not_licensed")
    run_ops_check(world)
    change_tenant(world, tenant_id, status="active")
    run_ops_check(world)
    change_tenant(world, tenant_id, status="not_licensed")
    run_ops_check(world)
    assert len(notices(world, name, "not licensed")) == 2


def test_an_offboarded_tenant_closes_its_incident_without_a_notice(world):
    tenant_id, name = put_tenant(world, status="consent_revoked")
    run_ops_check(world)
    change_tenant(world, tenant_id, status="offboarded")
    run_ops_check(world)
    assert len(notices(world, name)) == 1


def test_a_tenant_failing_the_threshold_of_runs_is_noticed_and_below_it_is_not(world):
    _, failing = put_tenant(world, consecutiveFailures=3, lastErrorClass="service_error", lastError="503 from Graph")
    _, flaky = put_tenant(world, consecutiveFailures=2)
    run_ops_check(world)
    (notice,) = notices(world, failing, "failed 3 runs")
    assert "503 from Graph" in notice["text"]
    assert notices(world, flaky) == []


def test_a_tenant_silent_for_the_threshold_is_noticed_and_a_recent_one_is_not(world):
    old = int((datetime.now(UTC) - timedelta(hours=7)).timestamp() * 1e9)
    recent = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1e9)
    activated = datetime.now(UTC) - timedelta(days=3)
    _, silent = put_tenant(world, activatedAt=activated, feedPublished=f"feed|{old:020d}|abcd1234")
    _, lively = put_tenant(world, activatedAt=activated, feedPublished=f"feed|{recent:020d}|abcd1234")
    run_ops_check(world)
    assert len(notices(world, silent, "no alert stored for 6 hours")) == 1
    assert notices(world, lively) == []


def test_the_onboarding_backfill_count_is_reported_once(world):
    activated = datetime.now(UTC) - timedelta(hours=1)
    tenant_id, name = put_tenant(world, activatedAt=activated, passComplete=True,
                                 feedPublished=f"feed|{int(time.time() * 1e9):020d}|abcd1234")
    alerts = world.table("Alerts")
    for index, created in enumerate([activated - timedelta(days=2), activated - timedelta(hours=3),
                                     activated - timedelta(minutes=1), activated + timedelta(minutes=5)]):
        alerts.upsert_entity({"PartitionKey": tenant_id, "RowKey": f"alert|a{index}", "alertId": f"a{index}",
                              "createdDateTime": created.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")})
    run_ops_check(world)
    run_ops_check(world)
    (notice,) = notices(world, name)
    assert "backfill of 3 alerts" in notice["subject"]


def test_the_mssp_credential_failing_is_noticed_and_its_recovery_too(world):
    incidents = world.table("Incidents")
    now = datetime.now(UTC)
    incidents.upsert_entity({"PartitionKey": "mssp", "RowKey": "credential", "kind": "mssp_credential",
                             "code": "AADSTS7000222", "message": "the app's client secret has expired",
                             "firstSeen": now, "lastSeen": now, "count": 4, "open": True})
    run_ops_check(world)
    run_ops_check(world)
    (notice,) = notices(world, "credential is failing")
    assert "AADSTS7000222" in notice["text"]
    incidents.upsert_entity({"PartitionKey": "mssp", "RowKey": "credential", "open": False})
    run_ops_check(world)
    assert len(notices(world, "credential works again")) == 1


def test_an_mssp_secret_about_to_expire_is_noticed_once(world):
    run_ops_check(world)
    run_ops_check(world)
    (notice,) = notices(world, "credential expires on", EXPIRES)
    assert "secret" in notice["text"]


def test_the_expiry_of_a_certificate_credential_is_read_from_the_certificate():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from notify_mssp.config import CredentialExpiryConfig
    from notify_mssp.mssp_checks import credential_expiry
    from shared.app_credentials import AppCertificateConfig, certificate_source
    from shared.settings import Settings

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mssp-app")])
    not_after = datetime(2027, 3, 31, 12, 0, tzinfo=UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(datetime(2026, 1, 1, tzinfo=UTC)).not_valid_after(not_after)
                   .sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) + certificate.public_bytes(serialization.Encoding.PEM)
    settings = Settings({"MSSP_APP_CREDENTIAL": "certificate", "MSSP_APP_CERTIFICATE": pem.decode()})

    def certificate_of(settings: Settings):  # type: ignore[no-untyped-def]
        return lambda: certificate_source(AppCertificateConfig.from_settings(settings).certificate)

    assert credential_expiry(CredentialExpiryConfig.from_settings(settings), certificate_of(settings)) == not_after
    federated = Settings({"MSSP_APP_CREDENTIAL": "federated"})
    assert credential_expiry(CredentialExpiryConfig.from_settings(federated), certificate_of(federated)) is None
