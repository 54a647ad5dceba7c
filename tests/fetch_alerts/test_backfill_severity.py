"""An alert created before the tenant became active (the onboarding backfill boundary, `activatedAt`) gets
no e-mail: neither a `new` obligation nor a `severity-<Level>` one when its severity rises later."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from local.run.stack import LocalStack
from tests.fetch_alerts.harness import add_alert, add_tenant, hours_ago, run_tick, start_stack, update_alert
from tests.fetch_alerts.truth import assert_table_matches_ground_truth, stored_rows


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    service = start_stack(tmp_path_factory.mktemp("backfill-severity"))
    yield service
    service.stop()


def _obligations(stack: LocalStack, tenant: str) -> list[str]:
    return sorted(r["RowKey"].split("|", 1)[1] for r in stored_rows(stack, tenant)
                  if r["RowKey"].startswith("obligation|"))


@pytest.mark.parametrize("source", ["graph", "defender"])
def test_a_backfill_alert_whose_severity_rises_gets_no_severity_obligation(stack: LocalStack, source: str) -> None:
    tenant = add_tenant(stack, source=source, alerts={"lagSeconds": 0})
    old = add_alert(stack, tenant, createdDateTime=hours_ago(stack, 3), lastUpdateDateTime=hours_ago(stack, 3),
                    severity="low")
    run_tick(stack)
    update_alert(stack, tenant, old["id"], severity="high")
    fresh = add_alert(stack, tenant, severity="low")
    run_tick(stack)
    update_alert(stack, tenant, fresh["id"], severity="high")
    run_tick(stack)
    assert_table_matches_ground_truth(stack, tenant, source)
    # The alert created after activation still gets both; the backfill alert gets none.
    assert _obligations(stack, tenant) == sorted([f"{fresh['id']}|new", f"{fresh['id']}|severity-High"])
