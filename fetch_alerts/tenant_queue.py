"""Ingestion's work queue: the timer enqueues one message per active tenant, the `ingest_tenant` queue trigger
ingests one tenant per message, on as many instances as the queue's length asks for (docs/ARCHITECTURE.md,
"Ingestion on a queue").

The queue lives in the Functions host's own storage account (the `AzureWebJobsStorage` connection), the one the
queue trigger listens on. A message's body is the JSON text

    {"tenantId": "<tenant GUID>", "runId": "<the tick's run id>", "enqueuedAt": "<ISO 8601 UTC>"}

base64-encoded, as the host's queue trigger expects by default (host.json `extensions.queues.messageEncoding`,
default base64: https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#host-json).
Each message lives FETCH_MESSAGE_TTL_SECONDS (about one schedule interval): a tenant the instances did not
reach before the next tick gets a fresh message from that tick, so an old one expires instead of piling up.

Azure Storage queues promise no order (the tenants are enqueued least recently attempted first, and mostly
come out that way) and deliver at least once; the per-tenant lease (fetch_alerts.lease) makes a duplicate
delivery harmless.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from shared.settings import SettingsError
from shared.validators import is_guid

logger = logging.getLogger(__name__)

INGEST_QUEUE = "ingest-tenants"
# The host moves a message that failed maxDequeueCount times to "<queue>-poison"
# (https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger#poison-messages).
POISON_QUEUE = f"{INGEST_QUEUE}-poison"
CONNECTION = "AzureWebJobsStorage"  # the binding's connection: the host's own storage

ENQUEUE_WORKERS = 8  # sends in flight at once: thousands of tenants are enqueued in seconds
DRAIN_POLL_SECONDS = 1.0
_MAX_RUN_ID = 200


class MalformedMessage(ValueError):
    """A message this app did not write, or no longer understands: completed without work, never retried."""


@dataclass(frozen=True)
class TenantMessage:
    tenant_id: str
    run_id: str
    enqueued_at: str = ""

    def to_text(self) -> str:
        return json.dumps({"tenantId": self.tenant_id, "runId": self.run_id, "enqueuedAt": self.enqueued_at},
                          separators=(",", ":"))

    @classmethod
    def parse(cls, body: bytes | str) -> TenantMessage:
        """The message's fields; MalformedMessage when it is not one of ours."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedMessage("not JSON") from None
        if not isinstance(data, dict):
            raise MalformedMessage("not a JSON object")
        tenant_id, run_id, enqueued_at = data.get("tenantId"), data.get("runId"), data.get("enqueuedAt", "")
        if not isinstance(tenant_id, str) or not is_guid(tenant_id):
            raise MalformedMessage("tenantId is not a tenant GUID")
        if not isinstance(run_id, str) or not run_id or len(run_id) > _MAX_RUN_ID or not run_id.isprintable():
            raise MalformedMessage("runId is missing or not a run id")
        if not isinstance(enqueued_at, str):
            raise MalformedMessage("enqueuedAt is not a string")
        return cls(tenant_id.lower(), run_id, enqueued_at[:40])


# --- the connection: the host's own storage ------------------------------------------------------------------


@dataclass(frozen=True)
class QueueConnection:
    """Where the queue trigger listens: `AzureWebJobsStorage` as a connection string (Azurite locally), or,
    as in Azure, the identity-based form: `AzureWebJobsStorage__queueServiceUri` with the user-assigned
    identity named by `AzureWebJobsStorage__clientId`
    (https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity).
    These are the host's platform settings (infra/modules/app-settings.bicep sets them), read here as the host
    reads them rather than registered in shared.settings: the code must find the queue the trigger uses."""

    connection_string: str = ""
    queue_service_uri: str = ""
    client_id: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> QueueConnection:
        env = os.environ if environ is None else environ
        return cls(connection_string=env.get(CONNECTION, "").strip(),
                   queue_service_uri=env.get(f"{CONNECTION}__queueServiceUri", "").strip(),
                   client_id=env.get(f"{CONNECTION}__clientId", "").strip())

    def client(self, queue: str) -> QueueClient:
        policy = TextBase64EncodePolicy()
        if self.connection_string:
            return QueueClient.from_connection_string(self.connection_string, queue, message_encode_policy=policy)
        if not self.queue_service_uri:
            raise SettingsError(f"{CONNECTION} is not set (and neither is {CONNECTION}__queueServiceUri): the "
                                "ingestion timer needs the host's storage to enqueue tenants")
        from shared.tables import managed_identity_credential

        return QueueClient(self.queue_service_uri, queue, credential=managed_identity_credential(self.client_id),
                           message_encode_policy=policy)


# --- enqueueing ------------------------------------------------------------------------------------------------


_created: set[str] = set()
_created_lock = threading.Lock()


def ensure_queue(client: QueueClient) -> None:
    """Create the queue when missing, once per process (Bicep creates it in Azure: then a no-op)."""
    if client.queue_name in _created:
        return
    with _created_lock:
        if client.queue_name not in _created:
            try:
                client.create_queue()
                logger.info("created queue %s", client.queue_name)
            except ResourceExistsError:
                pass
            _created.add(client.queue_name)


@dataclass
class Enqueued:
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0


def enqueue_tenants(client: QueueClient, tenant_ids: Iterable[str], run_id: str, *, ttl_seconds: int,
                    workers: int = ENQUEUE_WORKERS) -> Enqueued:
    """One message per tenant, sent `workers` at a time; a send that still fails after the client's own retries
    is counted and logged (the tenant gets a message again next tick), never stops the others."""
    started = time.monotonic()
    ensure_queue(client)
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    texts = [TenantMessage(tenant_id, run_id, now).to_text() for tenant_id in tenant_ids]
    result = Enqueued()

    def send(text: str) -> bool:
        try:
            client.send_message(text, time_to_live=ttl_seconds)
            return True
        except AzureError as exc:
            logger.warning("tick %s: a tenant's message was not enqueued: %s", run_id, type(exc).__name__)
            return False

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="enqueue") as pool:
        for ok in pool.map(send, texts):
            if ok:
                result.sent += 1
            else:
                result.failed += 1
    result.seconds = time.monotonic() - started
    return result


# --- waiting for the tick's messages ---------------------------------------------------------------------------


def queue_length(client: QueueClient) -> int:
    """The queue's approximate message count: never lower than the messages in the queue, invisible ones (being
    processed, or waiting for a retry) included, but possibly higher, e.g. expired messages not yet removed
    (https://learn.microsoft.com/rest/api/storageservices/get-queue-metadata). Azurite counts every stored
    message, invisible and expired ones too, and drops expired ones at the next read of messages (which the
    queue trigger's polling does)."""
    return int(client.get_queue_properties().approximate_message_count or 0)


async def wait_until_drained(length: Callable[[], int], deadline: float, *,
                             poll_seconds: float = DRAIN_POLL_SECONDS,
                             clock: Callable[[], float] = time.monotonic) -> bool:
    """Poll `length` (run on a worker thread) every `poll_seconds` until it is 0 (True) or `deadline`
    (time.monotonic()) passes (False). A failed read is logged once and polled again."""
    warned = False
    while True:
        try:
            if await asyncio.to_thread(length) == 0:
                return True
        except AzureError as exc:
            if not warned:
                logger.warning("the ingestion queue's length could not be read (%s); still waiting",
                               type(exc).__name__)
                warned = True
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(poll_seconds, remaining))


@functools.cache
def connection() -> QueueConnection:
    """The process's queue connection, read at first use."""
    return QueueConnection.from_environ()


