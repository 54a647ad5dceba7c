"""Paging and API limits: the real rate limits switched on give zero 429s; the limiter never waits past
the tick's budget."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from fetch_alerts.config import RateLimits
from fetch_alerts.ratelimit import SWEEP_EVERY, BudgetExhausted, RateLimiter
from fetch_alerts.sources import PassState
from local.run.stack import LocalStack
from shared.alert_sources import AlertSource
from shared.settings import Settings
from tests.fetch_alerts.harness import add_tenant, hours_ago, run_tick, start_stack, tenant_row
from tests.fetch_alerts.truth import assert_table_matches_ground_truth

TENANT = "00000000-0000-0000-0000-000000000001"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    service = start_stack(tmp_path_factory.mktemp("limits"), FETCH_GRAPH_PAGE_SIZE="1",
                          FETCH_MAX_PAGES_PER_TENANT="400")
    yield service
    service.stop()


@pytest.mark.slow
def test_with_the_real_rate_limits_on_a_large_catch_up_gets_no_429(stack: LocalStack) -> None:
    # 160 pages of one alert: more calls than Graph's 150 a minute, so the limiter must hold some back.
    tenant = add_tenant(stack, rate_limits=True, alerts={"count": 160, "start": hours_ago(stack, 20),
                                                         "lagSeconds": 0, "updatesPerAlert": 0})
    run_tick(stack, timeout=180)
    stats = stack.cloud.control("GET", "stats").json()
    assert stats["throttled"].get(tenant, {}) == {}
    # More calls than the 150 a minute the cloud allows, and none refused: the limiter held some back.
    assert stats["apiRequests"][tenant]["graph"] >= 160
    assert tenant_row(stack, tenant)["passComplete"] is True
    assert_table_matches_ground_truth(stack, tenant, "graph")


def test_the_limiter_refuses_a_wait_past_the_deadline() -> None:
    limiter = RateLimiter(RateLimits.from_settings(Settings({"GRAPH_CALLS_PER_MINUTE": "2"})))
    deadline = time.monotonic() + 5
    limiter.acquire(TENANT, AlertSource.GRAPH, deadline)
    limiter.acquire(TENANT, AlertSource.GRAPH, deadline)
    with pytest.raises(BudgetExhausted):
        limiter.acquire(TENANT, AlertSource.GRAPH, deadline)


def test_the_limits_are_per_tenant_and_per_api() -> None:
    limiter = RateLimiter(RateLimits.from_settings(Settings({"GRAPH_CALLS_PER_MINUTE": "1",
                                                             "DEFENDER_CALLS_PER_MINUTE": "1"})))
    deadline = time.monotonic() + 1
    limiter.acquire(TENANT, AlertSource.GRAPH, deadline)
    # One call a minute each, yet neither of these waits (a wait would pass the 1 s deadline and raise):
    limiter.acquire(TENANT, AlertSource.DEFENDER, deadline)
    limiter.acquire("00000000-0000-0000-0000-000000000002", AlertSource.GRAPH, deadline)
    # while the tenant's own Graph limit is used up.
    with pytest.raises(BudgetExhausted):
        limiter.acquire(TENANT, AlertSource.GRAPH, deadline)


def test_the_global_limit_holds_across_tenants() -> None:
    limiter = RateLimiter(RateLimits.from_settings(Settings({"GLOBAL_API_CALLS_PER_MINUTE": "2"})))
    deadline = time.monotonic() + 1
    limiter.acquire(TENANT, AlertSource.GRAPH, deadline)
    limiter.acquire("00000000-0000-0000-0000-000000000002", AlertSource.GRAPH, deadline)
    with pytest.raises(BudgetExhausted):
        limiter.acquire("00000000-0000-0000-0000-000000000003", AlertSource.DEFENDER, deadline)


def test_a_pass_state_with_defender_windows_survives_its_json() -> None:
    state = PassState(lo=1, cap=2, max_seen=3, windows=((None, 10, None, None), (10, 11, 5, None)), width=7)
    again = PassState.from_json(state.to_json())
    assert again == state and again is not None and again.defender_windows() == state.windows


def test_a_pass_state_saved_before_defender_windows_resumes_at_or_before_its_created_le() -> None:
    old = PassState.from_json('{"lo":1,"cap":2,"max_seen":null,"created_le":100}')
    assert old is not None and old.defender_windows() == ((None, 101, None, None),)
    fresh = PassState.from_json('{"lo":1,"cap":2,"max_seen":null,"created_le":null}')
    assert fresh is not None and fresh.defender_windows() == ((None, None, None, None),)


@pytest.mark.parametrize("text", ['{"lo":1,"cap":2,"windows":[[1,2]]}', '{"lo":1,"cap":2,"windows":[["x",1,2,3]]}',
                                  '{"lo":1,"cap":2,"windows":7}', "[]"])
def test_an_unreadable_pass_state_is_ignored(text: str) -> None:
    assert PassState.from_json(text) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_idle_tenants_windows_are_dropped_and_a_busy_tenants_limit_still_holds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(RateLimits.from_settings(Settings({"GRAPH_CALLS_PER_MINUTE": "2",
                                                             "GLOBAL_API_CALLS_PER_MINUTE": "1000000"})), clock)
    many = [f"00000000-0000-0000-0001-{i:012d}" for i in range(2 * SWEEP_EVERY)]
    for tenant_id in many:
        limiter.acquire(tenant_id, AlertSource.GRAPH, clock.now + 1)
    clock.now += 50
    limiter.acquire(TENANT, AlertSource.GRAPH, clock.now + 1)
    limiter.acquire(TENANT, AlertSource.GRAPH, clock.now + 1)  # TENANT's limit of 2 a minute is used up
    assert limiter.tracked() == len(many) + 1
    clock.now += 15  # the many tenants' calls are 65 s old, TENANT's 15 s: the next sweep drops only theirs
    others = [f"00000000-0000-0000-0002-{i:012d}" for i in range(SWEEP_EVERY)]
    for tenant_id in others:
        limiter.acquire(tenant_id, AlertSource.GRAPH, clock.now + 1)
    assert limiter.tracked() <= SWEEP_EVERY + 1
    with pytest.raises(BudgetExhausted):  # TENANT's windows were kept: its third call within the minute waits
        limiter.acquire(TENANT, AlertSource.GRAPH, clock.now + 1)
