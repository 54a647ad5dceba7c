"""Signed webhooks cannot be replayed: the signature covers `<timestamp>.<body>`, a timestamp more than
five minutes from the app's clock is refused, and a signature already accepted is refused again within
the window, except that a request with an `externalId` keeps answering its one invitation. Over HTTP on
the local host, with the rows read back from Azurite."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests

from shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

PROBLEM = "application/problem+json"


def _captured(onboarding, body: dict, signed_at: float | None = None) -> tuple[bytes, dict[str, str]]:
    """A request as the onboarding system sends it, to be sent (and sent again) as is."""
    data = json.dumps(body).encode()
    timestamp = int(time.time() if signed_at is None else signed_at)
    headers = {"Content-Type": "application/json", "x-functions-key": onboarding.key,
               TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(onboarding.webhook_secret, data, timestamp)}
    return data, headers


def _send(onboarding, data: bytes, headers: dict[str, str]) -> requests.Response:
    return requests.post(f"{onboarding.host_url}/api/tenants", data=data, headers=headers, timeout=30)


def _refused(response: requests.Response, field: str) -> dict:
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == 401 and body["field"] == field
    return body


def test_a_captured_request_sent_again_is_refused_and_writes_nothing(onboarding):
    data, headers = _captured(onboarding, {"customerName": "Replayed Ltd"})
    first = _send(onboarding, data, headers)
    assert first.status_code == 201 and "consentUrl" in first.json()
    before = onboarding.snapshot()

    body = _refused(_send(onboarding, data, headers), SIGNATURE_HEADER)

    assert "already received" in body["detail"]
    assert onboarding.snapshot() == before  # no second invitation, no second consent link


def test_the_accepted_signature_is_recorded_until_it_expires(onboarding):
    signed_at = int(time.time())
    data, headers = _captured(onboarding, {"customerName": "Recorded Ltd"}, signed_at)
    assert _send(onboarding, data, headers).status_code == 201

    key = hashlib.sha256(headers[SIGNATURE_HEADER].encode()).hexdigest()
    row = onboarding.tables().get_table_client("Invitations").get_entity("signature", key)
    assert row["expiresAt"] == datetime.fromtimestamp(signed_at + 300, UTC)


def test_a_replay_with_another_spelling_of_the_signature_is_refused(onboarding):
    data, headers = _captured(onboarding, {"customerName": "Spelling Ltd"})
    assert _send(onboarding, data, headers).status_code == 201
    respelled = {**headers, SIGNATURE_HEADER: headers[SIGNATURE_HEADER].upper().replace("SHA256=", "sha256=")}
    _refused(_send(onboarding, data, respelled), SIGNATURE_HEADER)


@pytest.mark.parametrize("offset", [-360, 360, -86400])
def test_a_timestamp_more_than_five_minutes_away_is_refused(onboarding, offset):
    data, headers = _captured(onboarding, {"customerName": "Stale Ltd"}, time.time() + offset)
    before = onboarding.snapshot()
    body = _refused(_send(onboarding, data, headers), TIMESTAMP_HEADER)
    assert "300 seconds" in body["detail"]
    assert onboarding.snapshot() == before


@pytest.mark.parametrize("offset", [-240, 240])
def test_a_timestamp_within_five_minutes_is_accepted(onboarding, offset):
    data, headers = _captured(onboarding, {"customerName": "Skewed Ltd"}, time.time() + offset)
    assert _send(onboarding, data, headers).status_code == 201


@pytest.mark.parametrize("timestamp", [None, "", "abc", "-5", "1.5e9", f"0{int(time.time())}", "9" * 20,
                                       f"{int(time.time())}.0", "17000000\u00b2\u00b2"],
                         ids=["missing", "empty", "letters", "negative", "exponent", "leading-zero", "20-digits",
                              "decimal", "superscript-digits"])
def test_a_missing_or_malformed_timestamp_is_refused(onboarding, timestamp):
    data, headers = _captured(onboarding, {"customerName": "Malformed Ltd"})
    if timestamp is None:
        del headers[TIMESTAMP_HEADER]
    else:
        headers[TIMESTAMP_HEADER] = timestamp
    _refused(_send(onboarding, data, headers), TIMESTAMP_HEADER)


def test_a_body_only_signature_of_the_old_scheme_is_refused(onboarding):
    data, headers = _captured(onboarding, {"customerName": "Old Scheme Ltd"})
    headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(onboarding.webhook_secret.encode(), data, "sha256").hexdigest()
    _refused(_send(onboarding, data, headers), SIGNATURE_HEADER)
    del headers[TIMESTAMP_HEADER]
    _refused(_send(onboarding, data, headers), TIMESTAMP_HEADER)


def test_a_signature_for_another_timestamp_is_refused(onboarding):
    data, headers = _captured(onboarding, {"customerName": "Moved Ltd"})
    headers[TIMESTAMP_HEADER] = str(int(headers[TIMESTAMP_HEADER]) - 1)
    _refused(_send(onboarding, data, headers), SIGNATURE_HEADER)


def test_an_externalId_request_sent_again_answers_the_same_invitation(onboarding):
    external = f"crm-{uuid.uuid4()}"
    data, headers = _captured(onboarding, {"customerName": "Idempotent Ltd", "externalId": external})
    first = _send(onboarding, data, headers)
    assert first.status_code == 201 and "consentUrl" in first.json()

    again = _send(onboarding, data, headers)

    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert "consentUrl" not in again.json()  # no new link
    rows = onboarding.tables().get_table_client("Invitations").query_entities(
        "PartitionKey eq 'invitation' and externalId eq @e", parameters={"e": external})
    assert len(list(rows)) == 1


def test_a_request_refused_for_a_bad_field_consumes_no_signature(onboarding):
    # Validation runs before the signature is recorded, so a 400 is answered again as a 400, not a 401.
    data, headers = _captured(onboarding, {"customerName": "X", "contactEmail": "nobody"})
    assert _send(onboarding, data, headers).status_code == 400
    assert _send(onboarding, data, headers).status_code == 400


def test_a_recorded_signature_is_pruned_by_the_verification_timer_once_its_timestamp_is_refused(onboarding):
    signed_at = int(time.time()) - 298  # accepted now, refused by the tolerance two seconds from now
    data, headers = _captured(onboarding, {"customerName": "Pruned Ltd"}, signed_at)
    assert _send(onboarding, data, headers).status_code == 201
    table = onboarding.tables().get_table_client("Invitations")
    key = hashlib.sha256(headers[SIGNATURE_HEADER].encode()).hexdigest()
    fresh_data, fresh_headers = _captured(onboarding, {"customerName": "Kept Ltd"})
    assert _send(onboarding, fresh_data, fresh_headers).status_code == 201
    fresh_key = hashlib.sha256(fresh_headers[SIGNATURE_HEADER].encode()).hexdigest()

    deadline = time.monotonic() + 30
    while any(r["RowKey"] == key for r in table.query_entities("PartitionKey eq 'signature'")):
        assert time.monotonic() < deadline, "the expired signature row was never pruned"
        onboarding.run_verification()
        time.sleep(0.5)

    assert table.get_entity("signature", fresh_key)["RowKey"] == fresh_key  # one still valid is kept
    # And the pruned one cannot be replayed: its timestamp is now refused.
    _refused(_send(onboarding, data, headers), TIMESTAMP_HEADER)


def test_a_signature_forgotten_after_our_own_failure_is_accepted_again(onboarding):
    # The webhook forgets the signature of a request that failed on our side (storage, the authority's
    # domain lookup): the sender's identical retry must get an answer, not a 401 "already received".
    from grant_access.webhook import forget_signature, refuse_replay
    from shared.problems import Problem
    from shared.request_body import Signed
    from shared.signing import verify

    data, headers = _captured(onboarding, {"customerName": "Retried Ltd"})
    signed_at = verify(onboarding.webhook_secret, data, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER],
                       time.time())
    signed = Signed(headers[SIGNATURE_HEADER], signed_at)
    table = onboarding.tables().get_table_client("Invitations")
    refuse_replay(table, signed, idempotent=False)
    with pytest.raises(Problem):
        refuse_replay(table, signed, idempotent=False)

    forget_signature(table, signed)

    refuse_replay(table, signed, idempotent=False)  # accepted once more
    assert _send(onboarding, data, headers).status_code == 401  # and recorded again: a replay now is refused
