"""The Storage queue trigger runs as the Functions host's Storage Queues extension runs it (local/host/queues.py),
against a real Azurite and real host processes (tests/host/apps/queue_app, whose host.json sets batchSize 4,
newBatchThreshold 2, maxPollingInterval 2 s, visibilityTimeout 1 s and maxDequeueCount 3). Messages are sent as
the product sends them: base64-encoded JSON text (azure-storage-queue's TextBase64EncodePolicy)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient, QueueMessage, TextBase64EncodePolicy

from local.host.hostconfig import HostConfigError, parse_host_config
from local.run.services import AZURITE_ACCOUNT, Azurite, LocalHost, start_azurite, start_host
from tests.host.test_timers import wait_until

APP_ROOT = Path(__file__).resolve().parent / "apps" / "queue_app"
WORK, IDLE, TABLE = "work", "idle", "QueueRecords"
#: The shortened in-flight visibility (LOCAL_HOST_QUEUE_VISIBILITY_SECONDS); renewed every 2 s.
VISIBILITY = 4


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """An Azurite of this module's own, with its debug log: the test of the empty-queue back-off counts requests."""
    workdir = tmp_path_factory.mktemp("queue-azurite")
    service = start_azurite(workdir, debug_log=workdir / "debug.log")
    yield service
    service.stop()


def settings(storage: Azurite, work: str = WORK, idle: str = IDLE) -> dict[str, str]:
    return {"AzureWebJobsStorage": storage.connection_string, "RECORDS_TABLE": TABLE, "WORK_QUEUE": work,
            "IDLE_QUEUE": idle}


def start(storage: Azurite, log_path: Path, **names: str) -> LocalHost:
    return start_host(APP_ROOT, settings(storage, **names), log_path=log_path,
                      env={"LOCAL_HOST_QUEUE_VISIBILITY_SECONDS": str(VISIBILITY)})


@pytest.fixture(scope="module")
def host(storage: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    # The idle queue exists and stays empty; the work queue does not exist when the host starts.
    queue(storage, IDLE).create_queue()
    service = start(storage, tmp_path_factory.mktemp("queue-host") / "host.log")
    yield service
    service.stop()


def queue(storage: Azurite, name: str, *, encoded: bool = True) -> QueueClient:
    policy = TextBase64EncodePolicy() if encoded else None
    return QueueClient.from_connection_string(storage.connection_string, name, message_encode_policy=policy)


def send(storage: Azurite, order: dict[str, Any], name: str = WORK) -> tuple[QueueMessage, str]:
    client = queue(storage, name)
    try:
        client.create_queue()
    except ResourceExistsError:
        pass
    text = json.dumps(order)
    return client.send_message(text), text


def records(storage: Azurite, kind: str, key: str | None = None) -> list[dict[str, Any]]:
    table = TableServiceClient.from_connection_string(storage.connection_string).create_table_if_not_exists(TABLE)
    rows = [dict(r) for r in table.query_entities("PartitionKey eq @kind", parameters={"kind": kind})]
    return [r for r in rows if key is None or r.get("key") == key or json.loads(r["body"]).get("key") == key]


def queue_length(storage: Azurite, name: str) -> int:
    """Messages in the queue, invisible ones included (so 0 means every message was deleted)."""
    return int(queue(storage, name).get_queue_properties().approximate_message_count or 0)


def listener(host: LocalHost, function: str) -> dict[str, Any]:
    return dict(host.stats()["queues"][function])


def test_host_json_queue_options_default_and_are_validated_as_the_extension_does() -> None:
    defaults = parse_host_config({"version": "2.0"}).queues
    assert (defaults.batch_size, defaults.max_polling_interval, defaults.visibility_timeout,
            defaults.max_dequeue_count, defaults.message_encoding) == (16, 60.0, 0.0, 5, "base64")
    assert defaults.effective_new_batch_threshold == 8 * (os.cpu_count() or 1)
    configured = parse_host_config({"version": "2.0", "extensions": {"queues": {
        "batchSize": 32, "newBatchThreshold": 0, "maxPollingInterval": "00:00:00.1", "messageEncoding": "None"}}})
    assert configured.queues.effective_new_batch_threshold == 0 and configured.queues.message_encoding == "none"
    for refused in ({"batchSize": 33}, {"batchSize": 0}, {"newBatchThreshold": -1}, {"maxDequeueCount": 0},
                    {"maxPollingInterval": "00:00:00.05"}, {"messageEncoding": "utf8"}):
        with pytest.raises(HostConfigError):
            parse_host_config({"version": "2.0", "extensions": {"queues": refused}})
    with pytest.raises(HostConfigError):  # blob leases last 15 to 60 s
        parse_host_config({"version": "2.0", "singleton": {"listenerLockPeriod": "00:00:10"}})


def test_a_missing_queue_is_polled_for_and_its_first_message_is_delivered_as_a_queue_message(
        storage: Azurite, host: LocalHost) -> None:
    wait_until(lambda: "Queue 'work' of 'Functions.work' does not exist yet; polling for it"
               in host.log_path.read_text(), 15, "the missing queue was not noticed")
    assert listener(host, "work")["polls"] == 0
    key = uuid.uuid4().hex
    sent, text = send(storage, {"key": key})
    (row,) = wait_until(lambda: records(storage, "work", key), 30, "the message was not delivered")
    assert row["isQueueMessage"] is True
    assert row["body"] == text and row["messageId"] == sent.id and row["dequeueCount"] == 1
    assert row["popReceipt"]
    assert dt.datetime.fromisoformat(row["insertion_time"]) == sent.inserted_on
    assert dt.datetime.fromisoformat(row["expiration_time"]) == sent.expires_on
    assert dt.datetime.fromisoformat(row["time_next_visible"]) > sent.inserted_on
    wait_until(lambda: queue_length(storage, WORK) == 0, 15, "the message was not deleted after success")
    log = host.log_path.read_text()
    assert "Executing 'Functions.work' (Reason='New queue message detected on 'work'.', Id=" in log
    assert f"Trigger Details: MessageId: {sent.id}, DequeueCount: 1" in log


def test_the_admin_api_runs_a_queue_function_with_a_message_whose_body_is_the_input(
        storage: Azurite, host: LocalHost) -> None:
    key = uuid.uuid4().hex
    text = json.dumps({"key": key})
    assert host.admin("POST", "functions/work", json={"input": text}).status_code == 202
    (row,) = wait_until(lambda: records(storage, "work", key), 15, "the admin call did not run the function")
    assert (row["body"], row["messageId"], row["dequeueCount"], row["popReceipt"]) == (text, "", 0, "")
    assert "Executing 'Functions.work' (Reason='This function was programmatically called via the host APIs.'" \
        in host.log_path.read_text()


def test_a_failed_message_is_retried_with_its_dequeue_count_raised(storage: Azurite, host: LocalHost) -> None:
    key = uuid.uuid4().hex
    send(storage, {"key": key, "fail": 1})
    wait_until(lambda: queue_length(storage, WORK) == 0, 30, "the retried message was not deleted")
    assert sorted(r["dequeueCount"] for r in records(storage, "work", key)) == [1, 2]
    assert records(storage, "poisoned", key) == []


def test_after_max_dequeue_count_failures_the_message_goes_to_the_poison_queue_with_its_body(
        storage: Azurite, host: LocalHost) -> None:
    key = uuid.uuid4().hex
    _, text = send(storage, {"key": key, "fail": "always"})
    (poisoned,) = wait_until(lambda: records(storage, "poisoned", key), 30, "nothing reached the poison queue")
    assert poisoned["body"] == text and poisoned["dequeueCount"] == 1
    assert sorted(r["dequeueCount"] for r in records(storage, "work", key)) == [1, 2, 3]
    wait_until(lambda: queue_length(storage, WORK) == 0 and queue_length(storage, f"{WORK}-poison") == 0, 15,
               "the poisoned message was left in a queue")
    assert "Message has reached MaxDequeueCount of 3. Moving message to queue 'work-poison'." \
        in host.log_path.read_text()


def test_a_message_that_is_not_base64_goes_to_the_poison_queue_without_running(
        storage: Azurite, host: LocalHost) -> None:
    ran_before = host.invocations("work")
    raw = queue(storage, WORK, encoded=False).send_message("{not base64}")
    wait_until(lambda: f"Message decoding has failed! Check MessageEncoding settings. MessageId={raw.id}."
               in host.log_path.read_text(), 30, "the undecodable message was not refused")
    # The poison queue's own listener cannot decode it either, and a poison queue has no poison queue.
    wait_until(lambda: listener(host, "poisoned")["decode_failures"] >= 1, 30,
               "the undecodable message did not reach the poison queue")
    assert host.invocations("work") == ran_before


def test_messages_in_flight_never_exceed_batch_size_plus_new_batch_threshold(
        storage: Azurite, host: LocalHost) -> None:
    keys = [uuid.uuid4().hex for _ in range(12)]
    for key in keys:
        send(storage, {"key": key, "sleep": 0.5})
    rows = wait_until(lambda: len(found := [r for k in keys for r in records(storage, "work", k)]) == 12 and found,
                      60, "not every message ran")
    wait_until(lambda: queue_length(storage, WORK) == 0, 15, "messages were left in the queue")
    concurrency = max(r["concurrency"] for r in rows)
    assert 1 < concurrency <= 4 + 2
    assert listener(host, "work")["max_in_flight"] <= 4 + 2


def test_a_message_whose_function_outlives_the_visibility_timeout_is_not_delivered_twice(
        storage: Azurite, host: LocalHost) -> None:
    renewals = listener(host, "work")["renewals"]
    key = uuid.uuid4().hex
    send(storage, {"key": key, "sleep": 2.5 * VISIBILITY})
    wait_until(lambda: records(storage, "work", key), 30, "the message was not delivered")
    wait_until(lambda: queue_length(storage, WORK) == 0, 60, "the long message was not deleted")
    assert len(records(storage, "work", key)) == 1
    assert listener(host, "work")["renewals"] >= renewals + 2


def test_an_empty_queue_is_polled_with_exponential_back_off(storage: Azurite, tmp_path: Path) -> None:
    """Counted, not timed: by the time the delay has grown to maxPollingInterval (2 s) a new listener has polled only
    the few times the doubling from 100 ms takes, and Azurite served exactly the polls the host counted."""
    queue(storage, "backoff-idle").create_queue()
    host = start(storage, tmp_path / "host.log", work="backoff-work", idle="backoff-idle")
    try:
        at_max = wait_until(lambda: (s := listener(host, "idle"))["backoff_seconds"] == 2.0 and s, 30,
                            "the back-off never reached maxPollingInterval")
        assert at_max["polls"] <= 10  # polling every 100 ms would have made dozens of calls by then
        more = wait_until(lambda: (s := listener(host, "idle"))["polls"] >= at_max["polls"] + 2 and s, 15,
                          "the idle queue was no longer polled")
        assert more["backoff_seconds"] == 2.0

        def served() -> int:
            return (storage.log_path.parent / "debug.log").read_text().count(
                f"RequestMethod=GET RequestURL=http://127.0.0.1/{AZURITE_ACCOUNT}/backoff-idle/messages?")

        wait_until(lambda: served() >= more["polls"], 10, "Azurite did not log the polls the host counted")
        assert served() <= listener(host, "idle")["polls"]
    finally:
        host.stop()


def test_a_graceful_stop_releases_a_message_still_running(storage: Azurite, tmp_path: Path) -> None:
    """With the real 10-minute in-flight visibility: only a release makes the message visible again at once."""
    host = start_host(APP_ROOT, settings(storage, work="stop-work", idle="stop-idle"), log_path=tmp_path / "host.log")
    try:
        key = uuid.uuid4().hex
        send(storage, {"key": key, "sleep_first": 600}, name="stop-work")
        wait_until(lambda: records(storage, "work", key), 30, "the message was not delivered")
    finally:
        host.stop()
    assert host.process.returncode == 0
    visible = wait_until(lambda: queue(storage, "stop-work").peek_messages(), 15,
                         "the message of the stopped host is still invisible")
    assert visible[0].dequeue_count == 1


def test_the_message_of_a_killed_instance_is_delivered_again_to_another_after_the_visibility_timeout(
        storage: Azurite, tmp_path: Path) -> None:
    names = {"work": "crash-work", "idle": "crash-idle"}
    first = start(storage, tmp_path / "first.log", **names)
    second: LocalHost | None = None
    try:
        key = uuid.uuid4().hex
        send(storage, {"key": key, "sleep_first": 600}, name="crash-work")
        (taken,) = wait_until(lambda: records(storage, "work", key), 30, "the first instance did not take it")
        assert taken["pid"] == first.process.pid
        second = start(storage, tmp_path / "second.log", **names)
        first.kill()
        again = wait_until(lambda: [r for r in records(storage, "work", key) if r["dequeueCount"] == 2], 30,
                           "the killed instance's message was not delivered again")
        assert [r["pid"] for r in again] == [second.process.pid]
        wait_until(lambda: queue_length(storage, "crash-work") == 0, 15, "the message was not deleted")
        assert len(records(storage, "work", key)) == 2
    finally:
        first.kill()
        if second is not None:
            second.stop()


def _group_members(group: int) -> list[int]:
    """The live processes (zombies aside) of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(entry.name))
    return members


def test_a_host_process_killed_alone_takes_its_listener_process_with_it(storage: Azurite, tmp_path: Path) -> None:
    """The listeners poll in a child of the host (local/host/listener_process.py). When only the host's own process
    dies (as an out-of-memory kill would end it), the child ends too, completing nothing: the message in flight
    comes back after its visibility timeout, to another instance, as a dead instance's does."""
    names = {"work": "orphan-work", "idle": "orphan-idle"}
    first = start(storage, tmp_path / "first.log", **names)
    second: LocalHost | None = None
    try:
        group = first.process.pid  # the host leads its process group
        key = uuid.uuid4().hex
        send(storage, {"key": key, "sleep_first": 600}, name="orphan-work")
        (taken,) = wait_until(lambda: records(storage, "work", key), 30, "the host did not take the message")
        assert taken["pid"] == first.process.pid
        assert len(_group_members(group)) == 2, "the host and its listener process"
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        wait_until(lambda: not _group_members(group), 15, "the listener process outlived its host")
        second = start(storage, tmp_path / "second.log", **names)
        again = wait_until(lambda: [r for r in records(storage, "work", key) if r["dequeueCount"] == 2], 30,
                           "the dead host's message was not delivered again")
        assert [r["pid"] for r in again] == [second.process.pid]
        wait_until(lambda: queue_length(storage, "orphan-work") == 0, 15, "the message was not deleted")
    finally:
        first.kill()
        if second is not None:
            second.stop()


def test_the_listener_process_logs_at_host_json_default_level(storage: Azurite, tmp_path: Path) -> None:
    """host.json `logging.logLevel.default` Warning (here through its app-setting override) silences the listeners'
    information lines too, though they are written by the listener process."""
    host = start_host(APP_ROOT, settings(storage, work="quiet-work", idle="quiet-idle"), log_path=tmp_path / "host.log",
                      env={"AzureFunctionsJobHost__logging__logLevel__default": "Warning"})
    try:
        key = uuid.uuid4().hex
        send(storage, {"key": key}, name="quiet-work")
        wait_until(lambda: records(storage, "work", key), 30, "the message was not delivered")
        wait_until(lambda: queue_length(storage, "quiet-work") == 0, 15, "the message was not deleted")
    finally:
        host.stop()
    log = host.log_path.read_text()
    assert "Trigger Details" not in log and "Storage queue listener started" not in log
