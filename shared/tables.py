"""Access to the app's Azure Table Storage tables.

In Azure the table endpoint is reached with the function app's managed identity (no keys: the storage
account has shared-key access disabled); locally a connection string points at Azurite. Clients are built
lazily on first use and shared by the worker process; tables are created on first use if missing (Bicep
creates them in Azure, so there it is a no-op).
"""

from __future__ import annotations

import functools
import logging
import threading
from enum import StrEnum

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient

from shared.settings import Settings, SettingsError, get_settings

logger = logging.getLogger(__name__)

# Table Storage's limits, declared once so that every writer and reader batches alike.
MAX_TRANSACTION_OPERATIONS = 100  # operations per entity-group transaction (one partition)
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024  # payload of one transaction request
MAX_FILTER_COMPARISONS = 15  # comparisons per $filter
MAX_KEY_CHARS = 1024  # a PartitionKey or RowKey; `/ \\ # ?` and control characters are not allowed in either


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


def table_name(table: Table, settings: Settings | None = None) -> str:
    prefix = (settings or get_settings()).get("TABLES_NAME_PREFIX")
    return f"{prefix}{table.value}"


def managed_identity_credential(settings: Settings) -> TokenCredential:
    """The function app's managed identity (user-assigned when AZURE_CLIENT_ID is set)."""
    from azure.identity import ManagedIdentityCredential

    client_id = settings.get("AZURE_CLIENT_ID") or None
    return ManagedIdentityCredential(client_id=client_id)


class TableStore:
    """Table clients for one storage account, created lazily and shared across threads."""

    def __init__(self, service: TableServiceClient, settings: Settings) -> None:
        self._service = service
        self._settings = settings
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TableStore:
        connection_string = settings.get("TABLES_CONNECTION_STRING")
        if connection_string:
            return cls(TableServiceClient.from_connection_string(connection_string), settings)
        endpoint = settings.get("TABLES_ENDPOINT")
        if not endpoint:
            raise SettingsError(
                "TABLES_ENDPOINT is not set (and neither is TABLES_CONNECTION_STRING): "
                "the app needs one of them to reach its tables"
            )
        return cls(TableServiceClient(endpoint, credential=managed_identity_credential(settings)), settings)

    def table(self, table: Table) -> TableClient:
        """A client for one of the app's tables, creating the table on first use if it is missing."""
        name = table_name(table, self._settings)
        if name not in self._ready:
            with self._lock:
                if name not in self._ready:
                    try:
                        self._service.create_table(name)
                        logger.info("created table %s", name)
                    except ResourceExistsError:
                        pass
                    self._ready.add(name)
        return self._service.get_table_client(name)


@functools.cache
def get_table_store() -> TableStore:
    """The process-wide table store, built from settings at first use."""
    return TableStore.from_settings(get_settings())
