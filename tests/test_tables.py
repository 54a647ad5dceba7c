"""Table access against Azurite: tables are created on first use; misconfiguration names the setting."""

from __future__ import annotations

import uuid

import pytest

from shared.settings import Settings, SettingsError
from shared.tables import StorageConfig, Table, TableStore, table_name


def test_a_table_is_created_on_first_use_and_keeps_its_rows(azurite):
    prefix = "t" + uuid.uuid4().hex[:8]
    store = TableStore.from_settings(Settings({"TABLES_CONNECTION_STRING": azurite.connection_string,
                                               "TABLES_NAME_PREFIX": prefix}))
    table = store.table(Table.TENANTS)
    table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "status": "active"})
    again = store.table(Table.TENANTS)
    assert again.table_name == f"{prefix}Tenants"
    assert again.get_entity("p", "r")["status"] == "active"


def test_table_names_carry_the_prefix():
    assert table_name(Table.ALERTS, StorageConfig.from_settings(Settings({"TABLES_NAME_PREFIX": "dev1"})).name_prefix) \
        == "dev1Alerts"
    assert table_name(Table.ALERTS, StorageConfig.from_settings(Settings({})).name_prefix) == "Alerts"


def test_without_endpoint_or_connection_string_the_error_names_both_settings():
    with pytest.raises(SettingsError, match="TABLES_ENDPOINT.*TABLES_CONNECTION_STRING"):
        TableStore.from_settings(Settings({}))


def test_an_endpoint_uses_the_managed_identity_without_contacting_anything():
    store = TableStore.from_settings(Settings({"TABLES_ENDPOINT": "https://acct.table.core.windows.net",
                                               "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001"}))
    credential = store._service.credential  # noqa: SLF001 - the wiring is what this test checks
    assert type(credential).__name__ == "ManagedIdentityCredential"
