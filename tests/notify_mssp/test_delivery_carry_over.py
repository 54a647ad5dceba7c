"""Sends over the rate cap carry over to the next run instead of stalling this one."""

from __future__ import annotations

import pytest

from tests.notify_mssp.conftest import World

CAP = 2


@pytest.fixture(scope="module")
def notify_settings() -> dict[str, str]:
    return {"SEND_RATE_PER_MINUTE": str(CAP)}


def test_emails_over_the_rate_cap_carry_over_and_keep_their_obligations_pending(world: World):
    tenant = world.tenant()
    recipient = world.recipient()
    world.rule([tenant], [recipient])
    for _ in range(CAP + 1):
        world.alert(tenant)

    summary = world.run()

    assert (summary["sent"], summary["carriedOver"]) == (CAP, 1)
    assert len(world.emails_to(recipient)) == CAP
    states = sorted(o["state"] for o in world.obligations(tenant))
    assert states == ["done"] * CAP + ["pending"]
    assert sorted(row["state"] for row in world.deliveries(tenant)) == ["deferred"] + ["sent"] * CAP
    assert world.marker(tenant) is True  # the next run picks the carried e-mail up
