"""Table access against Azurite: tables are created on first use; misconfiguration names the setting."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableServiceClient

from notify_mssp.delivery import alert_delivery_key, digest_partition
from shared.alerts import alert_key, obligation_key
from shared.settings import Settings, SettingsError
from shared.tables import MAX_KEY_CHARS, StorageConfig, Table, TableStore, escape_key_part, table_name


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


# RFC 5322 allows `/ # ? % ' !` in an address's local part; Microsoft documents no alphabet for alert ids.
AWKWARD = ["o'brien/x#y?z%w!v@example.com", "100%25+a@b.example", "ünï😀@b.example", "lone\ud800surrogate",
           "da637551227677560813_-961444813"]


def test_escaped_key_parts_hold_no_forbidden_character_nor_a_percent_sign_and_stay_distinct():
    escaped = [escape_key_part(v, safe="@+") for v in AWKWARD]
    assert not [e for e in escaped if set(e) & set("/\\#?%'\x00")]
    assert len(set(escaped)) == len(AWKWARD)
    assert escape_key_part("!") == "!21" and escape_key_part("!21") == "!2121"  # the escape escapes itself
    assert escaped[-1] == AWKWARD[-1]  # Microsoft's ids are letters, digits, `_` and `-`: kept as they are
    with pytest.raises(ValueError):
        escape_key_part("x", safe="%")


def test_delivery_ledger_keys_of_awkward_alert_ids_and_recipients_hold_no_percent_sign():
    for value in AWKWARD:
        key = alert_delivery_key(str(uuid.uuid4()), value, "new", "rule-1", value)
        assert "%" not in key.row and not set(key.row) & set("/\\#?")
        assert "%" not in digest_partition("rule-1", value)


def test_the_key_limit_is_the_storage_services_own_and_every_key_we_build_fits_it(azurite):
    table = TableServiceClient.from_connection_string(azurite.connection_string).create_table(
        "k" + uuid.uuid4().hex[:8])
    table.create_entity({"PartitionKey": "p", "RowKey": "k" * MAX_KEY_CHARS})
    with pytest.raises(HttpResponseError):
        table.create_entity({"PartitionKey": "p", "RowKey": "k" * (MAX_KEY_CHARS + 1)})
    # A 254-character address of non-ASCII letters and a long alert id: escaping makes each thousands long.
    address = "ü" * 240 + "@example.com"
    alert_id = "ä/" * 400
    rule = uuid.uuid4().hex
    delivery = alert_delivery_key(str(uuid.uuid4()), alert_id, "severity-Informational", rule, address)
    keys = [(delivery.partition, delivery.row), (digest_partition(rule, address), "run|" + "0" * 64),
            ("p", alert_key(alert_id)), ("p", obligation_key(alert_id, "severity-Informational"))]
    for partition, row in keys:
        table.create_entity({"PartitionKey": partition, "RowKey": row})
        assert table.get_entity(partition, row)["RowKey"] == row
