"""The app settings Bicep deploys agree with the code: every setting `shared.settings.SETTINGS` registers is
set (secrets as Key Vault references), nothing else is set beyond the listed platform settings, defaults and
fixed values are ones the code accepts, and the host's %NAME% expressions, tables and callback route match."""

from __future__ import annotations

import json
import re

import pytest

from shared.settings import SETTINGS, Setting
from shared.tables import Table
from tests.infra.bicep import (
    APP_REGISTRATION,
    APP_SETTING_VALUES,
    APP_SETTINGS,
    MAIN,
    REPO,
    SETTING_OVERRIDES,
    app_settings,
    app_settings_resource,
    bicepparam,
    bicepparam_files,
    camel,
    params,
    parse,
)

# Registered settings Azure never gets, each with the reason.
LOCAL_ONLY = {
    "TABLES_CONNECTION_STRING": "Azurite locally; in Azure the tables are reached at TABLES_ENDPOINT with the "
                                "managed identity, and the account's shared keys are disabled.",
}

# Settings the Functions host needs that the code does not read; the Bicep line of each says why.
PLATFORM = frozenset({
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "MALLOC_ARENA_MAX",
})

# What must never be set on Flex Consumption (the runtime lives in functionAppConfig).
FORBIDDEN_ON_FLEX = frozenset({
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
    "AzureWebJobsStorage", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE",
})

# Feature packages whose bindings may use %NAME% app-setting expressions (a whole quoted string).
FEATURE_PACKAGES = ("grant_access", "fetch_alerts", "notify_mssp")
_EXPRESSION = re.compile(r"""["']%([A-Z][A-Z0-9_]*)%["']""")

BY_NAME = {s.name: s for s in SETTINGS}


def _deployed() -> list[Setting]:
    return [s for s in SETTINGS if s.name not in LOCAL_ONLY]


def _function_call(value: object) -> str | None:
    if isinstance(value, dict) and "function" in value:
        return value["function"]["type"]
    return None


def test_local_only_settings_are_registered() -> None:
    assert set(LOCAL_ONLY) <= set(BY_NAME)


@pytest.mark.parametrize("setting", _deployed(), ids=lambda s: s.name)
def test_every_setting_the_code_reads_is_set_in_azure(setting: Setting) -> None:
    assert setting.name in app_settings()


def test_the_app_settings_resource_sets_the_values_then_the_overrides() -> None:
    assert app_settings_resource()["properties"] == {
        "function": {"type": "union", "parameters": {"arg_1": APP_SETTING_VALUES, "arg_2": SETTING_OVERRIDES}}}


def test_azure_sets_nothing_outside_the_registry_and_the_platform_list() -> None:
    unknown = set(app_settings()) - set(BY_NAME) - PLATFORM
    assert unknown == set()


def test_local_only_settings_are_not_set_in_azure() -> None:
    assert set(LOCAL_ONLY) & set(app_settings()) == set()


def test_no_setting_flex_consumption_rejects_is_set() -> None:
    assert FORBIDDEN_ON_FLEX & set(app_settings()) == set()


@pytest.mark.parametrize("name", sorted(PLATFORM))
def test_each_platform_setting_line_says_why(name: str) -> None:
    lines = [line for line in APP_SETTINGS.read_text().splitlines() if re.match(rf"\s*{name}:", line)]
    assert len(lines) == 1 and re.search(r"//\s*\S+", lines[0]), f"{name} needs a one-line reason comment"


def test_telemetry_authenticates_with_the_managed_identity() -> None:
    settings = app_settings()
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == \
        "ClientId=${managedIdentityClientId};Authorization=AAD"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == settings["AZURE_CLIENT_ID"] == "managedIdentityClientId"
    assert settings["TABLES_ENDPOINT"] == settings["AzureWebJobsStorage__tableServiceUri"]


@pytest.mark.parametrize("setting", [s for s in _deployed() if s.secret], ids=lambda s: s.name)
def test_secret_settings_are_key_vault_references_by_name(setting: Setting) -> None:
    assert _function_call(app_settings()[setting.name]) == "keyVaultReference"
    secret_names = parse(APP_SETTINGS)["types"]["keyVaultSecretNamesType"]["value"]
    assert setting.name in secret_names


@pytest.mark.parametrize("setting", [s for s in _deployed() if not s.secret], ids=lambda s: s.name)
def test_non_secret_settings_are_not_key_vault_references(setting: Setting) -> None:
    assert _function_call(app_settings().get(setting.name)) != "keyVaultReference"


def _fixed_values() -> list[tuple[str, str]]:
    module_params = set(params(parse(APP_SETTINGS)))
    return [(name, value) for name, value in app_settings().items()
            if name in BY_NAME and isinstance(value, str) and value not in module_params and "${" not in value]


@pytest.mark.parametrize(("name", "value"), _fixed_values(), ids=[n for n, _ in _fixed_values()])
def test_values_written_in_the_bicep_are_the_code_defaults(name: str, value: str) -> None:
    assert value == BY_NAME[name].default
    BY_NAME[name].parse(name, value)


def _tunable() -> list[Setting]:
    main_params = params(parse(MAIN))
    # A required parameter (no default: the MSSP must choose, e.g. the sender mailbox) is not "tunable".
    return [s for s in SETTINGS if camel(s.name) in main_params
            and main_params[camel(s.name)].get("default") is not None]


def test_settings_an_mssp_tunes_are_parameters_of_main() -> None:
    tunable = {s.name for s in _tunable()}
    assert {"FETCH_ALERTS_SCHEDULE", "VERIFICATION_SCHEDULE", "DURABLE_HUB_NAME", "HTTP_TIMEOUT_SECONDS"} <= tunable


@pytest.mark.parametrize("setting", _tunable(), ids=lambda s: s.name)
def test_main_defaults_equal_the_code_defaults(setting: Setting) -> None:
    assert str(params(parse(MAIN))[camel(setting.name)]["default"]) == setting.default


@pytest.mark.parametrize("setting", _tunable(), ids=lambda s: s.name)
def test_main_passes_each_tunable_setting_to_the_app_settings(setting: Setting) -> None:
    call = parse(MAIN)["modules"]["appSettings"]["config"]["params"]
    passed = call[camel(setting.name)]
    if passed != camel(setting.name):
        # A parameter Bicep cannot constrain with decorators goes through its check: the parameter itself or fail().
        check = parse(MAIN)["variables"][passed]["value"]["operator"]
        assert passed == "checked" + camel(setting.name)[0].upper() + camel(setting.name)[1:]
        assert check["type"] == "conditional" and check["operands"]["true_value"] == camel(setting.name)
        assert check["operands"]["false_value"]["function"]["type"] == "fail"
    value = app_settings()[setting.name]
    assert camel(setting.name) in json.dumps(value)


def _bicepparam_overrides() -> list[tuple[str, str, str]]:
    overrides = []
    for path in bicepparam_files():
        template, _ = bicepparam(path)
        if template != MAIN.resolve():
            continue
        for name, value in re.findall(r"^param\s+(\w+)\s*=\s*'([^']*)'\s*$", path.read_text(), re.MULTILINE):
            setting = next((s for s in SETTINGS if camel(s.name) == name), None)
            if setting is not None:
                overrides.append((path.name, setting.name, value))
    return overrides


@pytest.mark.parametrize(("file", "name", "value"), _bicepparam_overrides(),
                         ids=[f"{f}:{n}" for f, n, _ in _bicepparam_overrides()])
def test_bicepparam_setting_values_are_accepted_by_the_code(file: str, name: str, value: str) -> None:
    parsed = BY_NAME[name].parse(name, value)
    assert str(parsed).lower() == value.strip().lower()  # accepted as the value it is, not a default


_OVERRIDE_BLOCK = re.compile(rf"^param\s+{SETTING_OVERRIDES}\s*=\s*\{{(.*?)^\}}", re.MULTILINE | re.DOTALL)
_OVERRIDE_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*'([^']*)'", re.MULTILINE)


def _setting_overrides() -> list[tuple[str, str, str]]:
    overrides = []
    for path in bicepparam_files():
        block = _OVERRIDE_BLOCK.search(path.read_text())
        if block:
            overrides += [(path.name, name, value) for name, value in _OVERRIDE_LINE.findall(block.group(1))]
    return overrides


@pytest.mark.parametrize(("file", "name", "value"), _setting_overrides(),
                         ids=[f"{f}:{n}" for f, n, _ in _setting_overrides()])
def test_setting_overrides_name_registered_non_secret_settings_with_valid_values(file: str, name: str,
                                                                                 value: str) -> None:
    assert name in BY_NAME and name not in LOCAL_ONLY, f"{file}: {name} is not a setting the code reads"
    assert not BY_NAME[name].secret, f"{file}: {name} is a secret; name it in keyVaultSecretNames instead"
    BY_NAME[name].parse(name, value)


def _schedules() -> list[Setting]:
    return [s for s in SETTINGS if s.name.endswith("_SCHEDULE")]


@pytest.mark.parametrize("setting", _schedules(), ids=lambda s: s.name)
def test_each_schedule_default_is_six_field_ncrontab(setting: Setting) -> None:
    assert setting.default is not None and len(setting.default.split()) == 6
    setting.parse(setting.name, setting.default)


def _host_expressions() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    sources = [REPO / "host.json"] + [p for pkg in FEATURE_PACKAGES for p in (REPO / pkg).rglob("*.py")]
    for path in sources:
        for name in _EXPRESSION.findall(path.read_text()):
            found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def test_code_and_host_json_use_the_expected_host_expressions() -> None:
    assert {"DURABLE_HUB_NAME", "FETCH_ALERTS_SCHEDULE"} <= set(_host_expressions())


@pytest.mark.parametrize("name", sorted(_host_expressions()))
def test_every_host_expression_is_a_registered_host_setting_set_in_azure(name: str) -> None:
    assert name in BY_NAME, f"%{name}% in {_host_expressions()[name]} is not in shared.settings.SETTINGS"
    assert BY_NAME[name].consumer == "host"
    assert name in app_settings()


def test_host_json_reads_the_hub_name_from_the_setting() -> None:
    host = json.loads((REPO / "host.json").read_text())
    assert host["extensions"]["durableTask"]["hubName"] == "%DURABLE_HUB_NAME%"


def test_hub_name_default_is_a_valid_task_hub_name() -> None:
    # Durable task hub names: 3-45 characters, letters and digits, starting with a letter.
    hub = str(params(parse(MAIN))["durableHubName"]["default"])
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,44}", hub)


def test_tables_created_are_the_tables_the_code_uses() -> None:
    created = parse(MAIN)["variables"]["appTableNames"]["value"]
    assert sorted(created) == sorted(t.value for t in Table)


def test_created_table_names_carry_the_configured_prefix() -> None:
    call = parse(MAIN)["modules"]["storage"]["config"]["params"]["tableNames"]
    assert call["loop_type"]["detail"]["array_name"] == "appTableNames"
    assert call["config"] == "${checkedTablesNamePrefix}${table}"


def test_consent_callback_output_is_the_route_the_code_serves() -> None:
    from grant_access.wiring import CALLBACK_ROUTE

    prefix = json.loads((REPO / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    assert parse(MAIN)["variables"]["consentCallbackPath"]["value"] == f"/{prefix}/{CALLBACK_ROUTE}"


def test_federated_credential_audience_defaults_to_what_the_code_requests() -> None:
    expected = BY_NAME["MSSP_APP_FEDERATION_AUDIENCE"].default
    assert params(parse(APP_REGISTRATION))["federationAudience"]["default"] == expected
    assert parse(MAIN)["modules"]["appRegistration"]["config"]["config"]["params"]["federationAudience"] == \
        "msspAppFederationAudience"
