"""SMTP servers close connections on their own, with `421` at any command or without a word. The transport
reconnects and sends again in the same attempt; a send that never reached the server gives its rate cap
slot back; the delivery log keeps the transport's error beside the cap's reason.

The server here is a small SMTP stub on a real loopback socket: it stands in for behaviours MailDev
cannot be made to show on demand (a 421 or a dropped connection at a chosen command)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from azure.data.tables import TableServiceClient

from local.run.services import free_port
from notify_mssp.delivery import DeliveryLog
from notify_mssp.ratecap import SendRateCap
from notify_mssp.sender import SendContext, delivery_key, send_chunk
from notify_mssp.transports import SmtpTransport
from tests.notify_mssp.conftest import World
from tests.notify_mssp.test_transports import StubSmtpServer, message, recipient

# Where a session gives up: at the greeting, a command, or the reply to the message's content ("END").
STAGES = ("greeting", "EHLO", "MAIL", "RCPT", "DATA", "END")


class ClosingSmtpServer(StubSmtpServer):
    """Accepts mail, except that the n-th session follows `plan[n]` = (stage, how[, nth]): at the nth time
    (1st by default) it reaches `stage` it answers `421 ... closing transmission channel` and closes
    (`421`), closes without a reply (`close`) or resets the connection (`reset`). Sessions beyond the plan
    serve normally."""

    def __init__(self, plan: list[tuple[str, str] | tuple[str, str, int]]) -> None:
        super().__init__()
        self.plan = list(plan)
        self.accepted: list[bytes] = []

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stage, how, nth = (*self.plan[self.sessions], 1)[:3] if self.sessions < len(self.plan) else ("", "", 1)
        self.sessions += 1
        reached = 0

        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        async def give_up() -> None:
            if how == "421":
                await reply("421 4.4.2 stub.example closing transmission channel")
            if how == "reset":
                writer.transport.abort()  # RST: the client sees ConnectionResetError
            else:
                writer.close()

        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            if stage == "greeting":
                return await give_up()
            await reply("220 stub.example ESMTP")
            while line := (await reader.readline()).decode("ascii", "replace").strip():
                verb = line.split(" ", 1)[0].split(":", 1)[0].upper()
                verb = "EHLO" if verb == "HELO" else verb
                reached += verb == stage
                if verb == stage and reached == nth:
                    return await give_up()
                if verb == "EHLO":
                    await reply("250 stub.example")
                elif verb == "DATA":
                    await reply("354 go ahead")
                    content = await reader.readuntil(b"\r\n.\r\n")
                    reached += stage == "END"
                    if stage == "END" and reached == nth:
                        return await give_up()
                    self.accepted.append(content)
                    await reply("250 2.0.0 queued")
                elif verb == "QUIT":
                    await reply("221 bye")
                    break
                else:  # MAIL, RCPT, RSET, NOOP
                    await reply("250 OK")
        writer.close()


def smtp_to(port: int) -> SmtpTransport:
    return SmtpTransport("127.0.0.1", port, starttls=False, username="", password="", timeout=5)


@pytest.fixture
def cap(azurite) -> SendRateCap:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    return SendRateCap(service.create_table(f"SendRate{uuid.uuid4().hex[:12]}"), per_minute=3, per_day=100)


def slots_used(cap: SendRateCap) -> dict[str, int]:
    return {window: sum(buckets.values()) for window, buckets in cap.recorded().items()}


# --- the transport ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["421", "close", "reset"])
@pytest.mark.parametrize("stage", ["greeting", "EHLO", "MAIL", "RCPT", "DATA"])
def test_a_connection_the_server_closes_before_the_message_is_sent_at_once_again(cap, stage, how, caplog):
    with ClosingSmtpServer([(stage, how)]) as server:
        assert cap.try_acquire(1) == 1
        with caplog.at_level(logging.WARNING, logger="notify_mssp.transports"):
            outcome = smtp_to(server.port).send(message(recipient()))
    assert outcome.status == "sent" and "after reconnecting" in outcome.detail
    assert len(server.accepted) == 1 and server.sessions == 2
    assert slots_used(cap) == {"minute": 1, "day": 1}  # the send again used the same slot
    (logged,) = [r.getMessage() for r in caplog.records if "reconnecting" in r.getMessage()]
    reason = logged.split("; reconnecting", 1)[0]  # the rest names the message, whose random id can hold "421"
    assert ("421" in reason) == (how == "421")


def test_a_kept_connection_answered_421_at_the_next_mail_from_is_reopened(cap):
    # The first session takes one e-mail, then answers the next MAIL FROM with 421, as servers do on a
    # connection they time out or shut down.
    with ClosingSmtpServer([("MAIL", "421", 2)]) as server:
        transport = smtp_to(server.port)
        assert cap.try_acquire(2) == 2
        assert transport.send(message(recipient())).status == "sent"
        assert transport.send(message(recipient())).status == "sent"
    assert len(server.accepted) == 2 and server.sessions == 2
    assert slots_used(cap) == {"minute": 2, "day": 2}


def test_a_421_after_the_message_content_means_not_taken_and_is_sent_again_at_once(cap):
    with ClosingSmtpServer([("END", "421")]) as server:
        assert cap.try_acquire(1) == 1
        outcome = smtp_to(server.port).send(message(recipient()))
    assert outcome.status == "sent" and len(server.accepted) == 1 and server.sessions == 2
    assert slots_used(cap) == {"minute": 1, "day": 1}


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_connection_lost_after_the_content_before_the_answer_is_not_sent_again_and_keeps_its_slot(cap, how):
    # The server may have taken the message: sending again now could deliver it twice.
    with ClosingSmtpServer([("END", how)]) as server:
        assert cap.try_acquire(1) == 1
        outcome = smtp_to(server.port).send(message(recipient()))
    assert outcome.status == "transient" and "may have been delivered" in outcome.detail
    assert outcome.submitted and server.sessions == 1
    assert slots_used(cap) == {"minute": 1, "day": 1}


@pytest.mark.parametrize(("stage", "how"), [("MAIL", "421"), ("greeting", "421"), ("RCPT", "close"),
                                            ("MAIL", "reset")])
def test_a_server_that_keeps_closing_gives_the_slot_back_and_logs_why(cap, stage, how, caplog):
    with ClosingSmtpServer([(stage, how)] * 2) as server:
        assert cap.try_acquire(1) == 1
        with caplog.at_level(logging.WARNING, logger="notify_mssp.transports"):
            outcome = smtp_to(server.port).send(message(recipient(), token="closing-1"))
    assert outcome.status == "transient" and not outcome.submitted and server.accepted == []
    assert slots_used(cap) == {"minute": 0, "day": 0}
    failed = [r.getMessage() for r in caplog.records if "to be tried again later" in r.getMessage()]
    assert len(failed) == 1 and "closing-1" in failed[0] and outcome.detail in failed[0]
    assert "Subject" not in failed[0]  # the reason, never the message


def test_a_server_that_is_not_there_gives_the_slot_back(cap):
    assert cap.try_acquire(2) == 2
    outcome = smtp_to(free_port()).send(message(recipient()))
    assert outcome.status == "transient" and "unreachable" in outcome.detail
    assert slots_used(cap) == {"minute": 1, "day": 1}


# --- the send activity's work: the delivery log and the cap ----------------------------------------------------


@pytest.fixture
def world(azurite) -> World:
    # World only needs the stack's Azurite to seed rows in the app's layouts.
    return World(SimpleNamespace(azurite=azurite))  # type: ignore[arg-type]


def context(world: World, transport: SmtpTransport, cap: SendRateCap) -> SendContext:
    log = DeliveryLog(world.table("DeliveryLog"), policy="resend", stale_after=timedelta(minutes=10),
                      give_up_after_runs=5)
    return SendContext(alerts=world.table("Alerts"), tenants=world.table("Tenants"),
                       rules_table=world.table("NotificationRules"), log=log, transport=transport,
                       acquire=cap.try_acquire)


def alert_email(world: World) -> dict[str, str]:
    tenant = world.tenant()
    to = world.recipient()
    rule = world.rule([tenant], [to])
    alert = world.alert(tenant)
    return {"kind": "alert", "tenant": tenant, "alertId": alert, "reason": "new", "obligationKey": "", "rule": rule,
            "recipient": to, "previousSeverity": "", "riseSeenAt": ""}


def test_an_email_whose_connection_was_closed_goes_out_in_the_same_attempt(world, cap):
    spec = alert_email(world)
    with ClosingSmtpServer([("MAIL", "421")]) as server:
        (answer,) = send_chunk(context(world, smtp_to(server.port), cap), run_id="run-1", token="t1",
                               messages=[spec], now=datetime.now(UTC))
    assert answer["outcome"] == "sent" and len(server.accepted) == 1
    assert slots_used(cap) == {"minute": 1, "day": 1}


def test_the_delivery_log_keeps_the_transport_error_when_the_cap_defers_the_retry(world, cap):
    spec = alert_email(world)
    key = delivery_key(spec, "run-1")
    with ClosingSmtpServer([("MAIL", "421")] * 2) as server:
        (answer,) = send_chunk(context(world, smtp_to(server.port), cap), run_id="run-1", token="t1",
                               messages=[spec], now=datetime.now(UTC))
        assert answer["outcome"] == "transient" and server.accepted == []
        assert slots_used(cap) == {"minute": 0, "day": 0}  # never reached the server: the slot came back
        assert cap.try_acquire(3) == 3  # other e-mails take the minute meanwhile
        (answer,) = send_chunk(context(world, smtp_to(server.port), cap), run_id="run-1", token="t2",
                               messages=[spec], now=datetime.now(UTC))
    assert answer["outcome"] == "carry"
    row = world.table("DeliveryLog").get_entity(key.partition, key.row)
    assert row["state"] == "deferred" and "rate cap" in row["lastError"]
    assert row["lastTransportError"].startswith("SMTP server closing the connection at MAIL FROM: 421")


@pytest.mark.parametrize("policy, resends", [("resend", 1), ("skip", 0)])
def test_an_email_that_may_have_been_delivered_is_left_to_the_duplicate_policy_and_counted(world, cap, policy,
                                                                                         resends):
    # The connection dropped after the whole message went out: the server may have taken it. It is not
    # released for a retry (which would resend it as if known unsent); the claim stays, and once abandoned
    # the duplicate policy decides, counting the possible repeat either way.
    spec = alert_email(world)
    key = delivery_key(spec, "run-1")
    with ClosingSmtpServer([("END", "close")]) as server:
        (answer,) = send_chunk(context(world, smtp_to(server.port), cap), run_id="run-1", token="t1",
                               messages=[spec], now=datetime.now(UTC))
        assert answer["outcome"] == "carry" and "outcome unknown" in answer["detail"]
        assert world.table("DeliveryLog").get_entity(key.partition, key.row)["state"] == "claimed"
        later = datetime.now(UTC) + timedelta(minutes=11)  # past the claim timeout: abandoned
        log = DeliveryLog(world.table("DeliveryLog"), policy=policy, stale_after=timedelta(minutes=10),
                          give_up_after_runs=5)
        retry = SendContext(alerts=world.table("Alerts"), tenants=world.table("Tenants"),
                            rules_table=world.table("NotificationRules"), log=log, transport=smtp_to(server.port),
                            acquire=cap.try_acquire)
        (answer,) = send_chunk(retry, run_id="run-2", token="t2", messages=[spec], now=later)
    assert answer["duplicate"] is True
    assert len(server.accepted) == resends
    row = world.table("DeliveryLog").get_entity(key.partition, key.row)
    assert row["duplicates"] == 1 and row["state"] == ("sent" if resends else "skipped")
