"""The Prefetcher (fetch_alerts/sources.py) and the collector pause it uses (shared/gcpause.py): pure logic."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from fetch_alerts.sources import LARGE_PAGE, Page, PassState, Prefetcher
from shared.gcpause import gc_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_the_collector_runs_again_only_when_the_last_of_overlapping_pauses_ends():
    first, second = gc_paused(), gc_paused()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_pause_leaves_a_collector_that_was_off_off():
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


def _pages(sizes: list[int], seen: list[bool]) -> Iterator[Page]:
    for index, size in enumerate(sizes):
        seen.append(gc.isenabled())  # while this page is being fetched
        alerts = [{"id": f"a{index}-{n}"} for n in range(size)]
        yield Page(alerts, PassState(lo=0, cap=0), complete=index == len(sizes) - 1)


def _drain(sizes: list[int]) -> tuple[list[bool], list[bool], list[int]]:
    fetching: list[bool] = []
    preparing: list[bool] = []

    def prepare(page: Page) -> int:
        preparing.append(gc.isenabled())
        count, page.alerts = len(page.alerts), []
        return count

    prefetcher = Prefetcher(_pages(sizes, fetching), prepare)
    try:
        counts = list(prefetcher)
    finally:
        prefetcher.close()
    return fetching, preparing, counts


def test_pages_after_a_large_one_are_fetched_and_prepared_with_the_collector_paused():
    fetching, preparing, counts = _drain([LARGE_PAGE, LARGE_PAGE, 3])
    assert counts == [LARGE_PAGE, LARGE_PAGE, 3]
    assert fetching == [True, False, False] and preparing == [True, False, False]
    assert gc.isenabled()


def test_small_pages_never_pause_the_collector():
    fetching, preparing, counts = _drain([5, 5, LARGE_PAGE - 1])
    assert counts == [5, 5, LARGE_PAGE - 1]
    assert all(fetching) and all(preparing)


def test_a_failing_page_ends_the_pause_and_reaches_the_consumer():
    def pages() -> Iterator[Page]:
        yield Page([{"id": str(n)} for n in range(LARGE_PAGE)], PassState(lo=0, cap=0), complete=False)
        raise RuntimeError("connection dropped")

    prefetcher = Prefetcher(pages())
    try:
        with pytest.raises(RuntimeError, match="connection dropped"):
            list(prefetcher)
    finally:
        prefetcher.close()
    assert gc.isenabled()
    assert not [t for t in threading.enumerate() if t.name == "alert-prefetch"]
