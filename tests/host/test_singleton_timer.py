"""Several instances of one app, one set of timers (local/host/timers.py): each timer listener runs only on the
instance that holds its blob lease `azure-webjobs-hosts/locks/<hostId>/Host.Functions.<name>.Listener`, and
the schedule status lives in `azure-webjobs-hosts/timers/<hostId>/Host.Functions.<name>/status`, as the
Functions host keeps them (tests/host/apps/singleton_app: the shortest lease periods, 15 s)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient

from local.run.services import Azurite, LocalHost, start_host
from tests.host.test_timers import NEVER, _five_minute_marks, wait_until

APP_ROOT = Path(__file__).resolve().parent / "apps" / "singleton_app"
EVERY_SECOND = "*/1 * * * * *"


def settings(azurite: Azurite, host_id: str, **schedules: str) -> dict[str, str]:
    return {"AzureWebJobsStorage": azurite.connection_string, "AzureFunctionsWebHost__hostid": host_id,
            "RECORDS_TABLE": "SingletonRecords", "TICK_SCHEDULE": NEVER, "MONITORED_SCHEDULE": NEVER, **schedules}


def hosts_container(azurite: Azurite):  # noqa: ANN201 - the SDK's ContainerClient
    return BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
        "azure-webjobs-hosts")


def ticks(host: LocalHost) -> int:
    return host.invocations("tick")["succeeded"]


@pytest.mark.slow
def test_a_timer_fires_on_the_lock_holder_only_and_another_instance_takes_over_when_it_dies(
        azurite: Azurite, tmp_path: Path) -> None:
    host_id = f"singleton-{uuid.uuid4().hex[:8]}"
    app_settings = settings(azurite, host_id, TICK_SCHEDULE=EVERY_SECOND)
    first = start_host(APP_ROOT, app_settings, log_path=tmp_path / "first.log")
    second: LocalHost | None = None
    try:
        second = start_host(APP_ROOT, app_settings, log_path=tmp_path / "second.log")
        lock = hosts_container(azurite).get_blob_client(f"locks/{host_id}/Host.Functions.tick.Listener")
        assert lock.get_blob_properties().lease.state == "leased"
        assert first.stats()["timers"]["running"] == ["monitored", "tick"]
        assert second.stats()["timers"]["running"] == []
        wait_until(lambda: ticks(first) >= 3, 15, "the lock holder's timer did not fire")
        assert ticks(second) == 0
        # The admin API runs a timer on the instance that receives the call, lock or not.
        assert second.admin("POST", "functions/tick", json={"input": ""}).status_code == 202
        wait_until(lambda: ticks(second) == 1, 15, "the admin call did not run on the second instance")

        first.kill()
        # The dead holder's lease expires within 15 s; the second instance retries every 15 s.
        wait_until(lambda: ticks(second) >= 3, 60, "the second instance did not take the timer over")
        assert second.stats()["timers"]["running"] == ["monitored", "tick"]
        assert f"Singleton lock acquired ({host_id}/Host.Functions.tick.Listener)" in second.log_path.read_text()
    finally:
        first.kill()
        if second is not None:
            second.stop()


def test_a_graceful_stop_releases_the_lock(azurite: Azurite, tmp_path: Path) -> None:
    host_id = f"singleton-{uuid.uuid4().hex[:8]}"
    host = start_host(APP_ROOT, settings(azurite, host_id), log_path=tmp_path / "host.log")
    lock = hosts_container(azurite).get_blob_client(f"locks/{host_id}/Host.Functions.monitored.Listener")
    assert lock.get_blob_properties().lease.state == "leased"
    host.stop()
    assert lock.get_blob_properties().lease.state == "available"


def test_the_schedule_status_in_storage_is_shared_by_instances_and_a_missed_occurrence_fires_past_due(
        azurite: Azurite, tmp_path: Path) -> None:
    host_id = f"singleton-{uuid.uuid4().hex[:8]}"
    last, missed = _five_minute_marks()
    recorded = {"Last": last.isoformat(), "Next": missed.isoformat(), "LastUpdated": last.isoformat()}
    container = hosts_container(azurite)
    if not container.exists():
        container.create_container()
    status_blob = container.get_blob_client(f"timers/{host_id}/Host.Functions.monitored/status")
    status_blob.upload_blob(json.dumps(recorded), overwrite=True)
    records = TableServiceClient.from_connection_string(azurite.connection_string).create_table_if_not_exists(
        "SingletonRecords")
    host = start_host(APP_ROOT, settings(azurite, host_id, MONITORED_SCHEDULE="0 */5 * * * *"),
                      log_path=tmp_path / "host.log")
    try:
        fired = wait_until(lambda: [r for r in records.query_entities("pid eq @pid", parameters={
            "pid": host.process.pid})], 15, "the past-due timer did not fire")
        assert len(fired) == 1 and fired[0]["pastDue"] is True
        assert json.loads(fired[0]["status"]) == recorded
        updated = wait_until(lambda: (s := json.loads(status_blob.download_blob().readall()))["Last"]
                             != recorded["Last"] and s, 15, "the status blob was not updated")
        assert dt.datetime.fromisoformat(updated["Next"]) > dt.datetime.now(dt.UTC)
    finally:
        host.stop()
