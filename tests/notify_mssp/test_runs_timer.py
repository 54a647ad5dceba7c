"""A manual run followed by the timer's own tick: the tick's run never takes the manual run's id, so the
alerts that arrived in between are e-mailed (docs/NOTIFICATIONS.md, "Run ids").

The timer ticks every 20 seconds here; tenants are `paused` so ingestion skips them and the notification
runs sweep their markers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from local.run.stack import LocalStack
from tests.notify_mssp.conftest import BASE_SETTINGS, World
from tests.notify_mssp.test_crash import wait_for
from tests.notify_mssp.test_runs_manual import finished_runs, listing, manual_tick, paused_tenant, titled_alert


@pytest.fixture(scope="module")
def notify_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack.start(Path(tmp_path_factory.mktemp("notify-timer")), with_maildev=True,
                             extra_settings={**BASE_SETTINGS, "FETCH_ALERTS_SCHEDULE": "*/20 * * * * *"})
    yield stack
    stack.stop()


@pytest.mark.slow
def test_a_manual_run_then_the_timer_tick_email_every_obligation(world: World):
    tenant, recipient = paused_tenant(world), world.recipient()
    world.rule([tenant], [recipient], mode="digest")
    started = datetime.now(UTC)  # align on a tick: wait for a timer run to finish first
    wait_for(lambda: any("-manual-" not in i["instanceId"] for i in finished_runs(world, started)), timeout=45)
    _, first = titled_alert(world, tenant)
    manual = manual_tick(world)
    wait_for(lambda: any("-manual-" in i["instanceId"] for i in finished_runs(world, manual)))
    _, second = titled_alert(world, tenant)
    wait_for(lambda: listing(world, recipient, first) and listing(world, recipient, second)
             and {o["state"] for o in world.obligations(tenant)} == {"done"}, timeout=45)
    # Proved by the timer's own run: no run id was started twice.
    ids = [i["instanceId"] for i in finished_runs(world, manual)]
    assert len(ids) == len(set(ids))
    assert (listing(world, recipient, first), listing(world, recipient, second)) == (1, 1)
