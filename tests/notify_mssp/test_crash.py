"""The host dying in the middle of a notification run: the claim without `sent` that a kill between send
and mark leaves is resolved by DUPLICATE_POLICY and counted, and nothing is stranded.

The send activity marks each e-mail right after the transport took it, so the only window is the send
itself: the app sends through `HoldingRelay`, which hands the message to MailDev and then holds the SMTP
reply while the test kills the host (the e-mail went out, its claim has no `sent`).

The local host keeps Durable state in memory, so a crashed run is gone (in Azure it would resume from the
task hub); the next run sweeps the tenants' markers and takes over the dead run's claims once they are
older than NOTIFY_CLAIM_TIMEOUT (2 s here). A run sweeps every tenant with a marker, so the counts are
asserted per tenant (its delivery row, its copies in MailDev), not on the run's totals."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local.run.cycle import delivery_summary
from local.run.stack import LocalStack
from shared.names import PLAN_TENANT_ACTIVITY
from tests.notify_mssp.conftest import BASE_SETTINGS, SmtpRelay, World

CLAIM_TIMEOUT_S = 2
CRASH_EXIT_CODE = 137


class HoldingRelay(SmtpRelay):
    """An SMTP relay in front of MailDev that, once `hold_after` messages were forwarded, forwards each
    further one too but holds its reply until `release` is set: the host can be killed mid-send."""

    def __init__(self) -> None:
        super().__init__()
        self.forwarded = 0
        self.hold_after: int | None = None
        # Only e-mails to this recipient count and may be held (None: every e-mail). A module's tests share the
        # host, so a later run also resends claims an earlier test's crash left: those must not take the hold.
        self.watch: str | None = None
        self.release = threading.Event()
        self._count = threading.Lock()

    def _serve(self, connection: Any) -> None:
        stream = connection.makefile("rwb")

        def reply(line: str) -> None:
            stream.write(line.encode() + b"\r\n")
            stream.flush()

        sender, recipients = "", []
        try:
            reply("220 relay ESMTP")
            for raw in stream:
                verb = raw.decode(errors="replace")[:4].upper()
                command = raw.decode(errors="replace").rstrip("\r\n")
                if verb == "MAIL":
                    sender, recipients = command.split(":", 1)[1].strip().strip("<>"), []
                elif verb == "RCPT":
                    recipients.append(command.split(":", 1)[1].strip().strip("<>"))
                if verb == "DATA":
                    reply("354 end with <CRLF>.<CRLF>")
                    lines = []
                    for data in stream:
                        if data in (b".\r\n", b".\n"):
                            break
                        lines.append(data[1:] if data.startswith(b"..") else data)
                    with smtplib.SMTP("127.0.0.1", self.upstream_port, timeout=10) as upstream:
                        upstream.sendmail(sender, recipients, b"".join(lines))
                    watched = self.watch is None or self.watch.lower() in (r.lower() for r in recipients)
                    with self._count:
                        self.forwarded += watched
                        hold = watched and self.hold_after is not None and self.forwarded > self.hold_after
                    if hold:
                        self.release.wait(60)  # the host is killed meanwhile: the sender never hears back
                    reply("250 2.0.0 queued")
                elif verb == "QUIT":
                    reply("221 bye")
                    return
                elif verb != "DATA":
                    reply("250 OK")
        except OSError:
            return
        finally:
            connection.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def kill_mid_send(world: World, relay: HoldingRelay, sent_before_kill: int = 0, *,
                  recipient: str | None = None) -> None:
    """Start a run; once `sent_before_kill` e-mails (to `recipient`, when given) went out and one more reached
    MailDev (its reply held), kill the host (SIGKILL, as the platform would)."""
    relay.release.clear()
    relay.forwarded, relay.hold_after, relay.watch = 0, sent_before_kill, recipient
    world.start_run()
    wait_for(lambda: relay.forwarded > sent_before_kill)
    world.host.kill()
    assert world.host.wait_exit(30) is not None
    relay.hold_after, relay.watch = None, None
    relay.release.set()


@pytest.fixture(scope="module")
def relay() -> Iterator[HoldingRelay]:
    relay = HoldingRelay()
    yield relay
    relay.release.set()
    relay.stop()


@pytest.fixture(scope="module")
def notify_stack(tmp_path_factory: pytest.TempPathFactory, relay: HoldingRelay) -> Iterator[LocalStack]:
    settings = {**BASE_SETTINGS, "NOTIFY_CLAIM_TIMEOUT": f"{CLAIM_TIMEOUT_S}s", "DUPLICATE_POLICY": "resend",
                "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(relay.port)}
    stack = LocalStack.start(Path(tmp_path_factory.mktemp("notify-crash")), with_maildev=True,
                             extra_settings=settings)
    assert stack.maildev is not None
    relay.upstream_port = stack.maildev.smtp_port
    yield stack
    stack.stop()


@pytest.fixture
def live(notify_stack: LocalStack) -> World:
    """The world with a running host (a test before may have left it crashed)."""
    if notify_stack.host is None or not notify_stack.host.alive:
        _restart(notify_stack, notify_stack.settings["DUPLICATE_POLICY"])
    return World(notify_stack)


def _restart(stack: LocalStack, policy: str) -> None:
    if stack.host is not None:
        stack.host.kill()  # already dead after a crash; closes its log
    stack.settings["DUPLICATE_POLICY"] = policy
    stack.start_host()


def _crash_run(world: World, function: str) -> None:
    """Start a run with a crash planned after `function`'s first invocation; wait for the host to die."""
    world.faults({"crash": {"point": "after_activity", "function": function, "occurrence": 1}})
    world.start_run()
    assert world.host.wait_exit(60) == CRASH_EXIT_CODE


def _run_after_restart(world: World, policy: str) -> dict:
    _restart(world.stack, policy)
    time.sleep(CLAIM_TIMEOUT_S + 0.5)  # the dead run's claims become abandoned
    return world.run()


@pytest.fixture
def crashed_between_send_and_mark(live: World, relay: HoldingRelay) -> Iterator[tuple[World, str, str]]:
    tenant = live.tenant()
    recipient = live.recipient()
    live.rule([tenant], [recipient])
    live.alert(tenant)
    kill_mid_send(live, relay, recipient=recipient)
    yield live, tenant, recipient


def test_the_crash_leaves_a_claim_without_sent_after_the_email_went_out(crashed_between_send_and_mark):
    world, tenant, recipient = crashed_between_send_and_mark
    assert len(world.emails_to(recipient)) == 1
    [row] = world.deliveries(tenant)
    assert row["state"] == "claimed"


def test_resend_policy_sends_a_second_copy_and_counts_exactly_one_duplicate(crashed_between_send_and_mark):
    world, tenant, recipient = crashed_between_send_and_mark

    summary = _run_after_restart(world, "resend")

    assert summary["duplicates"] >= 1
    assert len(world.emails_to(recipient)) == 2
    [row] = world.deliveries(tenant)
    assert (row["state"], row["duplicates"]) == ("sent", 1)
    assert {o["state"] for o in world.obligations(tenant)} == {"done"}
    assert world.marker(tenant) is False


def test_skip_policy_keeps_one_copy_and_reports_the_possible_duplicate(crashed_between_send_and_mark):
    world, tenant, recipient = crashed_between_send_and_mark

    summary = _run_after_restart(world, "skip")

    assert summary["duplicates"] >= 1 and summary["skipped"] >= 1
    assert len(world.emails_to(recipient)) == 1
    [row] = world.deliveries(tenant)
    assert (row["state"], row["duplicates"]) == ("skipped", 1)
    assert {o["state"] for o in world.obligations(tenant)} == {"done"}
    assert world.marker(tenant) is False


def test_the_counted_duplicate_reaches_the_delivery_summary(crashed_between_send_and_mark):
    world, tenant, _ = crashed_between_send_and_mark
    before = delivery_summary(world.table("DeliveryLog"))["duplicates"]

    _run_after_restart(world, "resend")

    # Other tests' leftovers may be resolved by the same sweep: at least this e-mail's duplicate is added.
    assert delivery_summary(world.table("DeliveryLog"))["duplicates"] >= before + 1
    assert world.deliveries(tenant)[0]["duplicates"] == 1


def test_obligations_claimed_by_a_run_that_died_are_picked_up_by_a_later_run(live: World):
    tenant = live.tenant()
    recipient = live.recipient()
    live.rule([tenant], [recipient])
    live.alert(tenant)
    _crash_run(live, PLAN_TENANT_ACTIVITY)
    assert {o["state"] for o in live.obligations(tenant)} == {"claimed"}

    _run_after_restart(live, "resend")

    [row] = live.deliveries(tenant)
    assert (row["state"], row["duplicates"]) == ("sent", 0)
    assert len(live.emails_to(recipient)) == 1
    assert {o["state"] for o in live.obligations(tenant)} == {"done"}
    assert live.marker(tenant) is False
