"""Settings are validated at first use with errors that name the setting; the sample file stays in sync."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from local.host.ncrontab import parse_schedule
from local.settings_sample import render, with_readme_table
from shared.settings import SETTINGS, Settings, SettingsError

REPO = Path(__file__).resolve().parent.parent


def test_defaults_apply_when_a_setting_is_absent():
    settings = Settings({})
    assert settings.get("FETCH_ALERTS_SCHEDULE") == "0 */5 * * * *"
    assert settings.get("ENTRA_DISABLE_INSTANCE_DISCOVERY") is False
    assert settings.get("HTTP_TIMEOUT_SECONDS") == 30


@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [
        ("FETCH_ALERTS_SCHEDULE", "*/5 * * * *", "six-field NCRONTAB"),
        ("ENTRA_AUTHORITY_HOST", "http://login.example", "https URL"),
        ("GRAPH_API_HOST", "https://graph.example/?x=1", "without query"),
        ("ENTRA_DISABLE_INSTANCE_DISCOVERY", "maybe", "not a boolean"),
        ("HTTP_TIMEOUT_SECONDS", "0", "greater than zero"),
        ("HTTP_TIMEOUT_SECONDS", "ten", "not an integer"),
        ("TABLES_NAME_PREFIX", "bad-prefix", "letters and digits"),
    ],
)
def test_a_bad_value_fails_with_a_message_naming_the_setting(name, raw, fragment):
    with pytest.raises(SettingsError) as error:
        Settings({name: raw}).get(name)
    assert name in str(error.value) and fragment in str(error.value)


def test_a_required_empty_setting_names_itself():
    with pytest.raises(SettingsError, match="AZURE_CLIENT_ID is not set"):
        Settings({}).require("AZURE_CLIENT_ID")


def test_an_unregistered_setting_cannot_be_read():
    with pytest.raises(KeyError, match="not a registered setting"):
        Settings({}).get("SOMETHING_ELSE")


def test_local_settings_sample_is_generated_from_the_registry():
    committed = (REPO / "local.settings.sample.json").read_text()
    assert committed == render(), "run `python -m local.settings_sample` after changing shared/settings.py"
    values = json.loads(committed)["Values"]
    assert {s.name for s in SETTINGS} <= set(values)


def test_the_sample_schedule_is_valid_ncrontab():
    values = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    schedule = Settings(values).get("FETCH_ALERTS_SCHEDULE")
    assert schedule == values["FETCH_ALERTS_SCHEDULE"]
    # The local host's NCRONTAB parser (as the Functions host's) accepts it and finds a next occurrence.
    now = datetime.now(UTC)
    assert parse_schedule(schedule).next_after(now) > now


def test_host_json_takes_the_hub_name_from_its_setting():
    host = json.loads((REPO / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["version"].startswith("[4.")
    assert host["extensions"]["durableTask"]["hubName"] == "%DURABLE_HUB_NAME%"
    assert {"maxConcurrentActivityFunctions", "maxConcurrentOrchestratorFunctions"} <= set(
        host["extensions"]["durableTask"])


def test_the_readme_settings_table_is_generated_from_the_registry():
    readme = (REPO / "README.md").read_text()
    assert readme == with_readme_table(readme), "run `python -m local.settings_sample`"
    assert all(f"| `{s.name}` |" in readme for s in SETTINGS)


@pytest.mark.parametrize("name", [s.name for s in SETTINGS if s.secret] + ["MSSP_APP_CLIENT_ID", "OPS_EMAIL"])
@pytest.mark.parametrize("raw", ["@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/x/)",
                                 " @microsoft.keyvault(VaultName=kv;SecretName=x)"])
def test_an_unresolved_key_vault_reference_is_a_settings_error_naming_the_setting(name: str, raw: str):
    # App Service hands an unresolvable reference to the app as its literal text; used as a value it would be
    # a guessable secret (a webhook key, a client secret), so reading it fails instead.
    with pytest.raises(SettingsError, match=f"{name} is an unresolved Key Vault reference"):
        Settings({name: raw}).get(name)


def test_a_short_siem_token_key_is_refused():
    with pytest.raises(SettingsError, match="SIEM_TOKEN_KEY: must be at least 32 characters"):
        Settings({"SIEM_TOKEN_KEY": "short"}).get("SIEM_TOKEN_KEY")
    assert Settings({"SIEM_TOKEN_KEY": "k" * 32}).get("SIEM_TOKEN_KEY") == "k" * 32
