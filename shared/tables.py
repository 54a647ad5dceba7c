"""Access to the app's Azure Table Storage tables.

In Azure the table endpoint is reached with the function app's managed identity (no keys: the storage
account has shared-key access disabled); locally a connection string points at Azurite. Clients are built
lazily on first use and shared by the worker process; tables are created on first use if missing (Bicep
creates them in Azure, so there it is a no-op). Every table client of the process sends through one HTTP
session whose connection pool is sized to the threads that use it at once (shared/http_pool.py).
"""

from __future__ import annotations

import functools
import logging
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient, TableServiceClient, UpdateMode

from shared.http_pool import AZURE_CORE_RETRIES, PooledSession, pool_size
from shared.settings import Settings, SettingsError, get_settings, load_config, setting

logger = logging.getLogger(__name__)

# Table Storage's limits, declared once so that every writer and reader batches alike.
MAX_TRANSACTION_OPERATIONS = 100  # operations per entity-group transaction (one partition)
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024  # payload of one transaction request
MAX_FILTER_COMPARISONS = 15  # comparisons per $filter
# A PartitionKey or RowKey holds 1 KiB of UTF-16, so 512 characters (Azurite refuses the 513th), and no
# `/ \\ # ?` or control character (docs/MICROSOFT.md, "Table Storage limits").
MAX_KEY_CHARS = 512
KEY_ESCAPE = "!"


def escape_key_part(value: str, safe: str = "") -> str:
    """`value` as it may appear in a key: letters, digits, `- _ . ~` and the characters in `safe` as they are,
    every other character as `!XX` per UTF-8 byte (`a/b` -> `a!2Fb`, `!` -> `!21`), so distinct values give
    distinct keys. Not `%XX`: Table Storage decodes the URL path of a point operation (get, update, merge,
    delete, insert-or-replace, insert-or-merge) twice, so a key holding `%` is read or written as another key
    (docs/MICROSOFT.md, "Table Storage limits")."""
    if KEY_ESCAPE in safe or "%" in safe:
        raise ValueError("`!` and `%` are never safe in a key")
    # surrogatepass: JSON may escape a lone surrogate (`\\ud800`), which the parser passes on as it is.
    return urllib.parse.quote(value.encode("utf-8", "surrogatepass"), safe="-_.~" + safe).replace("%", KEY_ESCAPE)


def prefix_end(prefix: str) -> str:
    """The smallest key after every key starting with `prefix` (`obligation|` -> `obligation}`): a range
    query `RowKey ge prefix and RowKey lt prefix_end(prefix)` reads exactly the keys with that prefix."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Table(StrEnum):
    """The app's tables (docs/ARCHITECTURE.md, "Tables"). The value is the base name, before any prefix."""

    TENANTS = "Tenants"
    INVITATIONS = "Invitations"
    ALERTS = "Alerts"
    NOTIFICATION_RULES = "NotificationRules"
    DELIVERY_LOG = "DeliveryLog"
    INCIDENTS = "Incidents"
    ALERT_FEED = "AlertFeed"
    SEND_RATE = "SendRate"
    INGEST_LEASES = "IngestLeases"


@dataclass(frozen=True)
class StorageConfig:
    """Where the app's tables are: a connection string (Azurite) or the endpoint reached with the managed
    identity (AZURE_CLIENT_ID: user-assigned), the optional table name prefix, and the tenants an instance
    ingests at once (FETCH_CONCURRENCY), which sizes the connection pool."""

    connection_string: str = setting("TABLES_CONNECTION_STRING")
    endpoint: str = setting("TABLES_ENDPOINT")
    name_prefix: str = setting("TABLES_NAME_PREFIX")
    managed_identity_client_id: str = setting("AZURE_CLIENT_ID")
    concurrency: int = setting("FETCH_CONCURRENCY")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> StorageConfig:
        return load_config(cls, settings)


def table_name(table: Table, prefix: str = "") -> str:
    """The table's name in the account: the base name after TABLES_NAME_PREFIX (StorageConfig.name_prefix)."""
    return f"{prefix}{table.value}"


def managed_identity_credential(client_id: str = "") -> TokenCredential:
    """The function app's managed identity (user-assigned when `client_id`, AZURE_CLIENT_ID, is set)."""
    from azure.identity import ManagedIdentityCredential

    return ManagedIdentityCredential(client_id=client_id or None)


# Table requests one tenant's ingestion can have in flight at once: two alert transactions
# (fetch_alerts/store.py, AlertWriter's in_flight) and its lease's renewal (fetch_alerts/lease.py, Heartbeat).
REQUESTS_PER_TENANT = 3


def table_transport(concurrency: int) -> RequestsTransport:
    """The HTTP transport of every table client of a store: one session, `pool_size` connections kept.
    An azure-core client takes its transport as the `transport` keyword, and one transport may serve many
    clients (https://devblogs.microsoft.com/azure-sdk/sharing-transport-in-azure-sdk-for-python/); a session
    given to RequestsTransport is used as it is (session_owner=False: closing a client leaves it open)."""
    session = PooledSession(pool_size(concurrency, REQUESTS_PER_TENANT), retries=AZURE_CORE_RETRIES)
    return RequestsTransport(session=session, session_owner=False)


class TableStore:
    """Table clients for one storage account, created lazily and shared across threads: Azure SDK client
    methods are thread-safe (https://azure.github.io/azure-sdk/python_design.html, "Thread safety"), so one
    client per table serves the whole process."""

    def __init__(self, service: TableServiceClient, name_prefix: str = "") -> None:
        self._service = service
        self._prefix = name_prefix
        self._clients: dict[str, TableClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TableStore:
        return cls.from_config(StorageConfig.from_settings(settings))

    @classmethod
    def from_config(cls, config: StorageConfig) -> TableStore:
        transport = table_transport(config.concurrency)
        if config.connection_string:
            return cls(TableServiceClient.from_connection_string(config.connection_string, transport=transport),
                       config.name_prefix)
        if not config.endpoint:
            raise SettingsError(
                "TABLES_ENDPOINT is not set (and neither is TABLES_CONNECTION_STRING): "
                "the app needs one of them to reach its tables"
            )
        credential = managed_identity_credential(config.managed_identity_client_id)
        return cls(TableServiceClient(config.endpoint, credential=credential, transport=transport),
                   config.name_prefix)

    def table(self, table: Table) -> TableClient:
        """The client of one of the app's tables, creating the table on first use if it is missing."""
        name = table_name(table, self._prefix)
        client = self._clients.get(name)
        if client is None:
            with self._lock:
                client = self._clients.get(name)
                if client is None:
                    try:
                        self._service.create_table(name)
                        logger.info("created table %s", name)
                    except ResourceExistsError:
                        pass
                    client = self._clients[name] = self._service.get_table_client(name)
        return client


@functools.cache
def get_table_store() -> TableStore:
    """The process-wide table store, built from settings at first use."""
    return TableStore.from_settings(get_settings())


# --- conditional (ETag) writes: the one place that spells them ------------------------------------------------

CONFLICT_ATTEMPTS = 5
"""Attempts of a read-modify-write (`update_row`) before it reports the row contended, and of an
entity-group transaction that a writer recomputes after a conflict. A caller that needs another count
states it (`attempts=`) and says why."""

Row = dict[str, Any]


class Missing(Enum):
    """What `update_row` does when the row does not exist."""

    SKIP = "skip"  # nothing: the outcome is MISSING
    CREATE = "create"  # mutate a new row holding only its keys, and create it


class Outcome(Enum):
    WRITTEN = "written"  # mutate's row is stored (created or replaced/merged under the ETag)
    UNCHANGED = "unchanged"  # mutate returned None or the row as read: nothing written
    MISSING = "missing"  # no row, and Missing.SKIP
    CONTENDED = "contended"  # another writer won every attempt: the caller decides (raise, drop, retry later)


@dataclass(frozen=True)
class RowUpdate:
    outcome: Outcome
    row: Row | None = None  # as written (WRITTEN), as read (UNCHANGED), else None
    etag: str | None = None  # the row's ETag after the write, or as read

    @property
    def written(self) -> bool:
        return self.outcome is Outcome.WRITTEN


def write_if_unchanged(table: TableClient, entity: Row, etag: str | None, *,
                       mode: UpdateMode = UpdateMode.REPLACE) -> str | None:
    """One conditional write: create `entity` when `etag` is None, else replace (or merge) it under `etag`.
    The new ETag, or None when another writer won (the row exists already, changed or is gone)."""
    try:
        if etag is None:
            metadata = table.create_entity(entity)
        else:
            metadata = table.update_entity(entity, mode=mode, etag=etag, match_condition=MatchConditions.IfNotModified)
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        return None
    return str(metadata.get("etag") or "written")  # "written" (no ETag heard) never matches a later condition


def delete_if_unchanged(table: TableClient, partition: str, row_key: str, etag: str) -> bool:
    """Delete the row only when its ETag still matches; False when it changed (a missing row raises
    ResourceNotFoundError for the caller to answer)."""
    try:
        table.delete_entity(partition, row_key, etag=etag, match_condition=MatchConditions.IfNotModified)
    except ResourceModifiedError:
        return False
    return True


def update_if_unchanged(entity: Row, etag: str, *, mode: UpdateMode = UpdateMode.MERGE) -> tuple[str, Row, Row]:
    """The operation of an entity-group transaction that updates `entity` only under `etag`."""
    return ("update", entity, {"mode": mode, "etag": etag, "match_condition": MatchConditions.IfNotModified})


def update_row(table: TableClient, partition: str, row_key: str, mutate: Callable[[Row], Row | None], *,
               missing: Missing = Missing.SKIP, attempts: int = CONFLICT_ATTEMPTS,
               mode: UpdateMode = UpdateMode.REPLACE, known: tuple[Row, str | None] | None = None,
               between_attempts: Callable[[int], None] | None = None) -> RowUpdate:
    """Read the row, apply `mutate`, write the result under the row's ETag; on a conflict, again from a fresh
    read, at most `attempts` times (docs/ARCHITECTURE.md, invariant 12).

    `mutate` gets a copy of the row as read (or, with Missing.CREATE and no row, a new row holding only its
    keys) and returns the row to write, or None to write nothing; it must depend on its argument only, as it
    runs again after each conflict. With UpdateMode.MERGE the row it returns may hold only the columns to
    change. `known` is a (row, ETag) already read, used for the first attempt instead of a read; an ETag of None
    means the row is taken to be absent, so the first attempt is an insert (a conflict then reads the row).
    `between_attempts(attempt)` runs after each conflict (a jittered pause, say)."""
    etag: str | None  # None: no row was read, so the write creates it
    for attempt in range(attempts):
        if attempt == 0 and known is not None:
            current, etag = dict(known[0]), known[1]
        else:
            try:
                entity = table.get_entity(partition, row_key)
                current, etag = dict(entity), entity.metadata["etag"]
            except ResourceNotFoundError:
                if missing is Missing.SKIP:
                    return RowUpdate(Outcome.MISSING)
                current, etag = {"PartitionKey": partition, "RowKey": row_key}, None
        changed = mutate(dict(current))
        if changed is None or (changed == current and etag is not None):
            return RowUpdate(Outcome.UNCHANGED, current, etag)
        new_etag = write_if_unchanged(table, changed, etag, mode=mode)
        if new_etag is not None:
            return RowUpdate(Outcome.WRITTEN, changed, new_etag)
        if between_attempts is not None:
            between_attempts(attempt)
    return RowUpdate(Outcome.CONTENDED)
