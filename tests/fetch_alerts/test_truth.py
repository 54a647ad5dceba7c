"""The ground-truth check itself: it forgives only a version made after the last tick was fired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fetch_alerts.keys import format_ticks, from_datetime
from shared.alerts import alert_key
from tests.fetch_alerts.truth import assert_rows_match_truth

FIRED = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ACTIVATED = FIRED + timedelta(days=1)  # every alert is backfill: no `new` obligations expected


def _truth(alert_id: str, updated: datetime) -> dict[str, Any]:
    stamp = format_ticks(from_datetime(updated))
    return {"id": alert_id, "createdDateTime": stamp, "lastUpdateDateTime": stamp, "graphHash": f"h{stamp}"}


def _row(alert_id: str, updated: datetime) -> dict[str, Any]:
    stamp = format_ticks(from_datetime(updated))
    return {"RowKey": alert_key(alert_id), "alertId": alert_id, "lastUpdateDateTime": stamp, "payloadHash": f"h{stamp}"}


def test_a_version_made_after_the_tick_was_fired_may_be_missing_or_older():
    truth = [_truth("a", FIRED + timedelta(seconds=5)), _truth("b", FIRED + timedelta(seconds=1))]
    rows = [_row("a", FIRED - timedelta(minutes=10))]  # `b` first appeared after the tick began
    assert assert_rows_match_truth(truth, rows, "graph", ACTIVATED, newer_than=FIRED).alerts == 2


@pytest.mark.parametrize("newer_than", [None, FIRED])
def test_a_version_made_before_the_tick_was_fired_must_be_stored(newer_than):
    truth = [_truth("a", FIRED - timedelta(seconds=1))]
    with pytest.raises(AssertionError, match="1 not the latest version"):
        assert_rows_match_truth(truth, [_row("a", FIRED - timedelta(minutes=10))], "graph", ACTIVATED,
                                newer_than=newer_than)
    with pytest.raises(AssertionError, match="1 missing"):
        assert_rows_match_truth(truth, [], "graph", ACTIVATED, newer_than=newer_than)


def test_without_a_tick_every_difference_counts():
    truth = [_truth("a", FIRED + timedelta(seconds=5))]
    with pytest.raises(AssertionError, match="1 not the latest version"):
        assert_rows_match_truth(truth, [_row("a", FIRED - timedelta(minutes=10))], "graph", ACTIVATED)
