"""Results POSTed to the onboarding system's callbackUrl: signed like the webhook, retried with backoff by
the Durable orchestration. The receiver is an https server on loopback (allowed here by the
local-development setting OUTBOUND_ALLOW_LOOPBACK) with a certificate from the local cloud's CA."""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from grant_access.notify_callback import FIRST_DELAY_SECONDS
from local.cloud.tls import server_ssl_context
from shared.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.grant_access.conftest import Onboarding, start_onboarding
from tests.grant_access.result_runs import finished_result_runs, result_run_history


class Receiver:
    """Records every POST; answers the queued statuses first, then 200."""

    def __init__(self, state_dir: Path) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append((dict(self.headers), body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = server_ssl_context(state_dir).wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Onboarding, Receiver]]:
    env = start_onboarding(Path(tmp_path_factory.mktemp("results")), OUTBOUND_ALLOW_LOOPBACK="true")
    receiver = Receiver(env.stack.cloud.ca_path.parent)
    yield env, receiver
    receiver.stop()
    env.stack.stop()


def signature_is_body_only(secret: str, raw: bytes, header: str) -> bool:
    return header == "sha256=" + hmac.new(secret.encode(), raw, "sha256").hexdigest()


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _posts(receiver: Receiver, invitation_id: str, count: int = 1) -> list[tuple[dict[str, str], bytes, dict]]:
    """The POSTs about one invitation, once `count` have arrived (or after 40 s)."""
    deadline = time.monotonic() + 40
    while True:
        matching = [(h, raw, json.loads(raw)) for h, raw in list(receiver.received)
                    if json.loads(raw)["invitationId"] == invitation_id]
        if len(matching) >= count or time.monotonic() > deadline:
            return matching
        time.sleep(0.1)


def test_an_active_tenant_is_reported_to_the_callbackUrl_signed(loopback):
    env, receiver = loopback
    tenant = env.new_tenant()
    invitation = env.invite(tenantId=tenant, externalId="crm-1", callbackUrl=receiver.url("/onboarded"))
    env.open(env.answer_consent(invitation["consentUrl"]))

    [(headers, raw, body)] = _posts(receiver, invitation["id"])

    assert body["status"] == "active" and body["tenantId"] == tenant and body["externalId"] == "crm-1"
    # The customer's next step: the portal-access page, without a key (grant_access/portal_access.py).
    assert body["portalAccessUrl"] == f"{env.host_url}/api/invitations/{invitation['id']}/portal-access"
    signed_at = verify(env.webhook_secret, raw, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], time.time())
    assert abs(time.time() - signed_at) < 120
    # The documented scheme, computed independently: HMAC-SHA256 over "<timestamp>.<body>".
    expected = hmac.new(env.webhook_secret.encode(), headers[TIMESTAMP_HEADER].encode() + b"." + raw, "sha256")
    assert headers[SIGNATURE_HEADER] == "sha256=" + expected.hexdigest()
    assert not signature_is_body_only(env.webhook_secret, raw, headers[SIGNATURE_HEADER])


def test_a_decline_is_reported_to_the_callbackUrl(loopback):
    env, receiver = loopback
    invitation = env.invite(callbackUrl=receiver.url("/onboarded"))
    env.open(env.answer_consent(invitation["consentUrl"], "cancel"))
    [(_, _, body)] = _posts(receiver, invitation["id"])
    assert body["status"] == "declined" and body["tenantId"] is None and body["portalAccessUrl"] is None


def test_a_failing_receiver_gets_the_result_again_after_a_backoff(loopback):
    env, receiver = loopback
    receiver.answers.extend([503])
    tenant = env.new_tenant()
    invitation = env.invite(tenantId=tenant, callbackUrl=receiver.url("/flaky"))
    env.open(env.answer_consent(invitation["consentUrl"]))

    posts = _posts(receiver, invitation["id"], count=2)

    assert [body["status"] for _, _, body in posts] == ["active", "active"]
    [run] = finished_result_runs(env.stack, invitation["id"])
    assert run["output"]["attempts"] == 2 and run["output"]["delivered"] is True
    # The second attempt waited for a durable timer set the first backoff after the first attempt ended.
    history = result_run_history(env.stack, invitation["id"], "active")
    steps = [e for e in history if e["EventType"] in ("TaskScheduled", "TaskCompleted", "TimerCreated")]
    assert [e["EventType"] for e in steps] == ["TaskScheduled", "TaskCompleted", "TimerCreated", "TaskScheduled",
                                               "TaskCompleted"]
    first_done, timer, retried = (_moment(steps[1]["Timestamp"]), _moment(steps[2]["FireAt"]),
                                  _moment(steps[3]["Timestamp"]))
    assert timer - first_done >= timedelta(seconds=FIRST_DELAY_SECONDS) and retried >= timer


def test_the_identical_callback_url_does_not_report_twice(loopback):
    env, receiver = loopback
    tenant = env.new_tenant()
    invitation = env.invite(tenantId=tenant, callbackUrl=receiver.url("/once"))
    redirect = env.answer_consent(invitation["consentUrl"])
    env.open(redirect)
    env.open(redirect)
    assert len(_posts(receiver, invitation["id"])) == 1
    # Every report of this invitation was started by the two requests above; once they have all ended,
    # nothing more can be POSTed.
    runs = finished_result_runs(env.stack, invitation["id"])
    assert [(r["runtimeStatus"], r["output"]["attempts"]) for r in runs] == [("Completed", 1)]
    assert len(_posts(receiver, invitation["id"])) == 1


def test_a_tenant_verified_by_the_timer_is_reported_when_it_becomes_active(loopback):
    env, receiver = loopback
    tenant = env.new_tenant(propagation_seconds=120)
    invitation = env.invite(tenantId=tenant, callbackUrl=receiver.url("/later"))
    env.open(env.answer_consent(invitation["consentUrl"]))
    # A report would have been started by the consent request itself: none was, so none can arrive.
    assert finished_result_runs(env.stack, invitation["id"]) == []
    assert _posts(receiver, invitation["id"], count=0) == []

    env.advance_cloud_clock(121)
    env.run_verification()

    [(_, _, body)] = _posts(receiver, invitation["id"])
    assert body["status"] == "active" and body["tenantId"] == tenant
