"""The send rate cap on Azurite: no 60 seconds (and no 24 hours) ever hold more grants than the cap, for
any pattern of send attempts, across threads and processes sharing the one row; slots of sends that never
reached the server come back."""

from __future__ import annotations

import multiprocessing
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from azure.data.tables import TableClient, TableServiceClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notify_mssp import ratecap
from notify_mssp.ratecap import PARTITION, SendRateCap

START = 1_800_000_000.0  # the start of a clock minute: the old fixed-minute cap's weak spot is 30-60 s on


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_table(connection_string: str) -> TableClient:
    service = TableServiceClient.from_connection_string(connection_string)
    return service.create_table(f"SendRate{uuid.uuid4().hex[:12]}")


@pytest.fixture
def rate_table(azurite) -> TableClient:
    return new_table(azurite.connection_string)


def most_in_any_window(times: list[float], seconds: float) -> int:
    """The most grant times any closed window [t, t + seconds] holds (the busiest one starts at a grant)."""
    ordered = sorted(times)
    return max((sum(1 for u in ordered[i:] if u <= t + seconds) for i, t in enumerate(ordered)), default=0)


def granted_times(cap: SendRateCap, clock: Clock, attempts: list[tuple[float, int]]) -> list[float]:
    times: list[float] = []
    for at, wanted in attempts:
        clock.now = at
        times += [at] * cap.try_acquire(wanted)
    return times


# --- any window ----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cap_size=st.integers(1, 6),
       steps=st.lists(st.tuples(st.floats(0, 70, allow_nan=False), st.integers(1, 4)), min_size=1, max_size=25))
def test_no_60_second_window_ever_holds_more_than_the_cap(azurite, cap_size, steps):
    table = new_table(azurite.connection_string)
    try:
        clock = Clock(START)
        cap = SendRateCap(table, per_minute=cap_size, per_day=0, clock=clock)
        at, attempts = START, []
        for gap, wanted in steps:  # gaps from 0 (bursts) to beyond a minute, on any fraction of a second
            at += gap
            attempts.append((at, wanted))
        times = granted_times(cap, clock, attempts)
        assert most_in_any_window(times, 60.0) <= cap_size
    finally:
        table.delete_table()


def test_four_sends_in_41_seconds_under_a_cap_of_3_are_no_longer_possible(rate_table):
    # The fixed-minute cap granted these: 3 late in one minute, then 1 early in the next.
    clock = Clock(START + 40)
    cap = SendRateCap(rate_table, per_minute=3, per_day=0, clock=clock)
    times = granted_times(cap, clock, [(START + 40, 3), (START + 81, 1)])
    assert times == [START + 40] * 3


def test_a_slot_frees_a_minute_and_at_most_a_second_and_a_bucket_later(rate_table):
    clock = Clock(START + 12.34)
    cap = SendRateCap(rate_table, per_minute=2, per_day=0, clock=clock)
    assert cap.try_acquire(2) == 2
    clock.now += 60.0
    assert cap.try_acquire(1) == 0 and cap.available() == 0
    clock.now += 1.1  # the margin for transit jitter and one 100 ms bucket
    assert cap.available() == 2 and cap.try_acquire(3) == 2


def test_the_rate_cap_grants_up_to_the_limit(rate_table):
    cap = SendRateCap(rate_table, per_minute=5, per_day=0, clock=Clock(START))
    assert [cap.try_acquire(3), cap.try_acquire(3), cap.try_acquire(1)] == [3, 2, 0]


def test_the_daily_cap_is_a_rolling_24_hours(rate_table):
    clock = Clock(START + 3600)  # 01:00 UTC
    cap = SendRateCap(rate_table, per_minute=100, per_day=6, clock=clock)
    assert cap.try_acquire(5) == 5
    clock.now += 22 * 3600  # 23:00 UTC: one left
    assert cap.try_acquire(5) == 1
    clock.now += 2 * 3600  # 01:00 UTC the next day: the five of 24 h ago still count until they are older
    assert cap.try_acquire(5) == 0
    clock.now += 61
    assert cap.try_acquire(9) == 5


def test_a_rate_cap_of_zero_is_off(rate_table):
    cap = SendRateCap(rate_table, per_minute=0, per_day=0)
    assert cap.try_acquire(10_000) == 10_000 and cap.available() is None


def test_the_counts_of_the_earlier_fixed_window_rows_carry_into_the_log(rate_table):
    # Rows as the fixed-minute cap left them: 2 sent in the current minute, 1 in the previous.
    index = int((START + 30) // 60)
    rate_table.create_entity({"PartitionKey": PARTITION, "RowKey": "minute", "current": index, "used": 2,
                              "previousUsed": 1})
    clock = Clock(START + 30)
    cap = SendRateCap(rate_table, per_minute=4, per_day=0, clock=clock)
    assert cap.try_acquire(4) == 1
    clock.now = START + 61  # the previous minute's send (at the latest, just before START) has aged out
    assert cap.try_acquire(4) == 1


# --- instances at once ---------------------------------------------------------------------------------------


def test_the_cap_holds_across_instances_sending_at_once_in_threads(rate_table):
    clock = Clock(START + 10)
    instances = [SendRateCap(rate_table, per_minute=7, per_day=20, clock=clock) for _ in range(4)]
    with ThreadPoolExecutor(8) as pool:
        granted = list(pool.map(lambda i: instances[i % 4].try_acquire(1 + i % 2), range(40)))
    assert sum(granted) == 7
    assert {name: sum(b.values()) for name, b in instances[0].recorded().items()} == {"minute": 7, "day": 7}


def _process_sends(connection_string: str, table_name: str, times: list[float], step: object,
                   results: object) -> None:
    """One instance in its own process: at each of `times` (in step with the other processes, as instances
    share the moment), two threads ask for a slot each."""
    table = TableServiceClient.from_connection_string(connection_string).get_table_client(table_name)
    granted: list[float] = []
    with ThreadPoolExecutor(2) as pool:
        for at in times:
            step.wait()  # type: ignore[attr-defined]
            cap = SendRateCap(table, per_minute=5, per_day=0, clock=lambda at=at: at)
            granted += [at for n in pool.map(cap.try_acquire, [1, 1]) for _ in range(n)]
    results.put(granted)  # type: ignore[attr-defined]


def test_the_cap_holds_across_processes_over_several_minutes(azurite, rate_table):
    # Three processes ask for two slots each every 5 s over 3 minutes, all at the same moments.
    context = multiprocessing.get_context("spawn")
    step, results = context.Barrier(3, timeout=60), context.Queue()
    times = [START + 5 * i for i in range(36)]
    processes = [context.Process(target=_process_sends, args=(azurite.connection_string, rate_table.table_name,
                                                              times, step, results)) for _ in range(3)]
    for process in processes:
        process.start()
    granted = [at for _ in processes for at in results.get(timeout=120)]
    for process in processes:
        process.join(30)
    assert most_in_any_window(granted, 60.0) <= 5
    # Five at the start, five once they are 61 s old (at +65 s), five more at +130 s.
    assert sorted(granted) == [START] * 5 + [START + 65] * 5 + [START + 130] * 5


# --- slots given back ------------------------------------------------------------------------------------------


def test_a_slot_given_back_can_be_granted_again(rate_table):
    cap = SendRateCap(rate_table, per_minute=2, per_day=10, clock=Clock(START))
    assert cap.try_acquire(2) == 2
    ratecap.settle_send(submitted=True)
    ratecap.settle_send(submitted=False)
    assert {name: sum(b.values()) for name, b in cap.recorded().items()} == {"minute": 1, "day": 1}
    assert cap.try_acquire(2) == 1


def test_settling_more_sends_than_were_granted_gives_back_nothing_more(rate_table):
    cap = SendRateCap(rate_table, per_minute=3, per_day=0, clock=Clock(START))
    assert cap.try_acquire(1) == 1
    for _ in range(3):
        ratecap.settle_send(submitted=False)
    assert cap.recorded() == {"minute": {}}
    other = SendRateCap(rate_table, per_minute=3, per_day=0, clock=Clock(START))
    assert other.try_acquire(3) == 3
    cap.try_acquire(0)  # a new grant of nothing replaces this thread's note: nothing to give back
    ratecap.settle_send(submitted=False)
    assert sum(cap.recorded()["minute"].values()) == 3
