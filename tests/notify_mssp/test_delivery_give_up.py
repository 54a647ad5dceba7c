"""An e-mail that keeps failing transiently is retried in later runs, but not forever: after
NOTIFY_GIVE_UP_AFTER_RUNS runs it is recorded as a permanent failure and its obligation completes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from local.run.stack import LocalStack
from tests.notify_mssp.conftest import BASE_SETTINGS, SmtpRelay, World

GIVE_UP_AFTER_RUNS = 2


@pytest.fixture(scope="module")
def notify_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    relay = SmtpRelay()
    relay.down = True  # the SMTP server never answers in this module
    settings = {**BASE_SETTINGS, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(relay.port),
                "NOTIFY_SEND_MAX_ATTEMPTS": "1", "NOTIFY_GIVE_UP_AFTER_RUNS": str(GIVE_UP_AFTER_RUNS)}
    stack = LocalStack.start(Path(tmp_path_factory.mktemp("notify-give-up")), with_maildev=True,
                             extra_settings=settings)
    yield stack
    stack.stop()
    relay.stop()


def test_a_transient_failure_carries_over_with_the_obligation_pending(world: World):
    tenant = world.tenant()
    world.rule([tenant], [world.recipient()])
    world.alert(tenant)

    summary = world.run()

    assert (summary["sent"], summary["carriedOver"]) == (0, 1)
    assert [o["state"] for o in world.obligations(tenant)] == ["pending"]
    assert [row["state"] for row in world.deliveries(tenant)] == ["retry"]
    assert world.marker(tenant) is True


def test_after_the_give_up_runs_the_email_is_recorded_failed_and_the_obligation_done(world: World):
    tenant = world.tenant()
    world.rule([tenant], [world.recipient()])
    world.alert(tenant)

    for _ in range(GIVE_UP_AFTER_RUNS):
        world.run()
    world.run()

    [row] = world.deliveries(tenant)
    assert row["state"] == "failed" and "gave up" in row["lastError"]
    assert [o["state"] for o in world.obligations(tenant)] == ["done"]
    assert world.marker(tenant) is False
