"""Ingestion's work queue (fetch_alerts/tenant_queue.py) against a real Azurite queue: what the timer enqueues,
how it is encoded, and the drain wait, which must count messages being processed (invisible) as not done."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from azure.storage.queue import QueueClient

from fetch_alerts.tenant_queue import (
    MalformedMessage,
    QueueConnection,
    TenantMessage,
    enqueue_tenants,
    queue_length,
    wait_until_drained,
)
from local.run.services import Azurite


@pytest.fixture
def queue(azurite: Azurite) -> Iterator[QueueClient]:
    client = QueueConnection(connection_string=azurite.connection_string).client(f"ingest-{uuid.uuid4().hex[:12]}")
    yield client
    client.delete_queue()


def _raw(azurite: Azurite, name: str) -> QueueClient:
    """The same queue without the base64 policy: the text as stored."""
    return QueueClient.from_connection_string(azurite.connection_string, name)


def test_one_base64_json_message_per_tenant_with_the_ttl(azurite: Azurite, queue: QueueClient) -> None:
    tenants = [str(uuid.uuid4()) for _ in range(300)]
    result = enqueue_tenants(queue, tenants, "notify-202611271205", ttl_seconds=300)  # creates the queue
    assert (result.sent, result.failed) == (300, 0)
    assert queue_length(queue) == 300
    seen: dict[str, dict] = {}
    raw = _raw(azurite, queue.queue_name)
    while len(seen) < 300:
        batch = list(raw.receive_messages(max_messages=32, visibility_timeout=60))
        assert batch
        for message in batch:
            body = json.loads(base64.b64decode(message.content))  # the host's default messageEncoding: base64
            seen[body["tenantId"]] = body
            ttl = message.expires_on - message.inserted_on
            assert timedelta(seconds=299) <= ttl <= timedelta(seconds=301)
    assert sorted(seen) == sorted(tenants)
    assert {body["runId"] for body in seen.values()} == {"notify-202611271205"}
    assert all(body["enqueuedAt"].endswith("Z") for body in seen.values())
    assert TenantMessage.parse(json.dumps(next(iter(seen.values())))).run_id == "notify-202611271205"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"runId": "r"}', b'{"tenantId": "x", "runId": "r"}',
                                  b'{"tenantId": "00000000-0000-0000-0000-000000000001"}',
                                  b'{"tenantId": "00000000-0000-0000-0000-000000000001", "runId": 5}',
                                  b"\xff\xfe"])
def test_a_message_that_is_not_ours_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedMessage):
        TenantMessage.parse(body)


def test_a_tenant_id_is_taken_in_lower_case() -> None:
    parsed = TenantMessage.parse('{"tenantId": "AAAAAAAA-0000-0000-0000-000000000001", "runId": "r"}')
    assert parsed.tenant_id == "aaaaaaaa-0000-0000-0000-000000000001"


def test_the_drain_wait_ends_when_every_message_is_processed(queue: QueueClient) -> None:
    enqueue_tenants(queue, [str(uuid.uuid4()) for _ in range(5)], "run", ttl_seconds=300)
    processed: list[str] = []

    def consume() -> None:  # one consumer that holds each message invisible a moment, then completes it
        while len(processed) < 5:
            for message in queue.receive_messages(max_messages=1, visibility_timeout=30):
                time.sleep(0.3)
                queue.delete_message(message)
                processed.append(message.id)

    consumer = threading.Thread(target=consume)
    consumer.start()
    drained = asyncio.run(wait_until_drained(lambda: queue_length(queue), time.monotonic() + 60, poll_seconds=0.1))
    consumer.join()
    assert drained and len(processed) == 5


def test_a_message_being_processed_keeps_the_queue_from_counting_as_drained(queue: QueueClient) -> None:
    enqueue_tenants(queue, [str(uuid.uuid4())], "run", ttl_seconds=300)
    taken = list(queue.receive_messages(max_messages=1, visibility_timeout=60))  # invisible, not completed
    assert len(taken) == 1 and not list(queue.peek_messages())
    drained = asyncio.run(wait_until_drained(lambda: queue_length(queue), time.monotonic() + 2, poll_seconds=0.2))
    assert not drained
    queue.delete_message(taken[0])
    assert asyncio.run(wait_until_drained(lambda: queue_length(queue), time.monotonic() + 30, poll_seconds=0.1))


def test_the_identity_based_connection_names_the_queue_service_and_the_identity() -> None:
    connection = QueueConnection.from_environ({
        "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net/",
        "AzureWebJobsStorage__clientId": "11111111-2222-3333-4444-555555555555",
        "AzureWebJobsStorage__credential": "managedidentity"})
    assert connection.connection_string == ""
    client = connection.client("ingest-tenants")
    assert client.url == "https://acct.queue.core.windows.net/ingest-tenants"
