"""A deploy that works the first time and the second: storage redundancy every Flex region offers, names that are valid
for any environment name azd accepts, checked free-text settings, a Key Vault name that survives teardown, the
deployer's right to store secrets, `make deploy` waiting for new role assignments, and the files that keep local
state out of the package and the repo.

Names are computed by evaluating main.bicep's own expressions (tests/infra/bicep.py Evaluator), with a stand-in
for uniqueString() that, like the real one, returns 13 lower-case letters and digits."""

from __future__ import annotations

import re
import string

import pytest

from shared.settings import SETTINGS
from tests.infra.bicep import (
    APP_REGISTRATION,
    INFRA,
    MAIN,
    REPO,
    BicepFail,
    default,
    evaluate,
    params,
    parse,
    resource,
)

MODULES = INFRA / "modules"
BY_NAME = {s.name: s for s in SETTINGS}


def _decorator(template: dict, param: str, kind: str) -> object:
    found = [d.get("argument") for d in params(template)[param].get("decorators") or [] if d["type"] == kind]
    assert found, f"{param} has no @{kind}"
    return found[0]


# --- storage redundancy -------------------------------------------------------------------------------------------

def test_storage_defaults_to_locally_redundant_and_zone_redundancy_is_a_parameter() -> None:
    for template in (parse(MAIN), parse(MODULES / "storage.bicep")):
        name = "storageSkuName" if "storageSkuName" in params(template) else "skuName"
        assert default(template, name) == "Standard_LRS"
        assert "Standard_ZRS" in _decorator(template, name, "allowed")
    assert parse(MAIN)["modules"]["storage"]["config"]["params"]["skuName"] == "storageSkuName"
    bicepparam = (INFRA / "main.bicepparam").read_text()
    assert "param storageSkuName = readEnvironmentVariable('STORAGE_SKU_NAME', 'Standard_LRS')" in bicepparam


# --- names from any environment name azd accepts --------------------------------------------------------------------

# azd's rule for environment names: ^[a-zA-Z0-9-\(\)_\.]{1,64}$ (azure-dev cli/azd/pkg/environment).
AZD_CHARACTERS = string.ascii_letters + string.digits + "-()_."
ENVIRONMENT_NAMES = [
    "prod",
    "msspalerts",
    "a",
    "A" * 64,
    "9" * 64,
    "-" * 64,
    "(" + "x" * 62 + ")",
    "My_Env.(Test)--" * 4 + "Zz1-",
    (AZD_CHARACTERS * 2)[:64],
    "a" * 19 + "-" + "b" * 44,
    "a" * 20 + "-" + "b" * 43,
    "_.-()" * 12 + "end",
]

# Azure's rules for each name (https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules).
NAME_RULES = {
    "identity": r"[A-Za-z0-9][A-Za-z0-9_-]{2,127}",
    "storage": r"[a-z0-9]{3,24}",
    "keyVault": r"(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]",
    "logAnalytics": r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]",
    "applicationInsights": r"[^%&\\?/]{1,260}",
    "plan": r"[A-Za-z0-9-]{1,60}",
    "functionApp": r"(?!-)[A-Za-z0-9-]{2,60}(?<!-)",
}
# Blob containers: 3-63 lower-case letters, digits and single hyphens, from and to a letter or digit.
CONTAINER_RULE = r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]"


def _deployment(**values: object) -> dict[str, object]:
    return {"mailTransport": "graph", "mailSender": "alerts@mssp.example", **values}


def test_environment_name_takes_what_azd_allows() -> None:
    template = parse(MAIN)
    assert _decorator(template, "environmentName", "min_length") == 1
    assert _decorator(template, "environmentName", "max_length") == 64


@pytest.mark.parametrize("environment", ENVIRONMENT_NAMES)
def test_generated_names_are_valid_for_each_resource_type(environment: str) -> None:
    assert re.fullmatch(r"[a-zA-Z0-9\-()_.]{1,64}", environment), "not an environment name azd accepts"
    names = evaluate(MAIN, "names", _deployment(environmentName=environment))
    assert set(names) == set(NAME_RULES)
    for kind, rule in NAME_RULES.items():
        assert re.fullmatch(rule, names[kind]), f"{kind}: {names[kind]!r}"
    container = evaluate(MAIN, "deploymentContainerName", _deployment(environmentName=environment))
    assert re.fullmatch(CONTAINER_RULE, container), container


@pytest.mark.parametrize("environment", ENVIRONMENT_NAMES)
def test_generated_names_carry_the_token_and_a_short_form_of_the_environment(environment: str) -> None:
    deployment = _deployment(environmentName=environment)
    token = evaluate(MAIN, "resourceToken", deployment)
    slug = evaluate(MAIN, "environmentSlug", deployment)
    assert re.fullmatch(r"[a-z0-9]{13}", token)
    assert len(slug) <= 20 and (slug == "" or re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug))
    names = evaluate(MAIN, "names", deployment)
    assert all(token in name for name in names.values())
    assert names["functionApp"] == (f"func-{slug}-{token}" if slug else f"func-{token}")


def test_simple_environment_names_keep_the_names_of_earlier_releases() -> None:
    # Earlier releases named resources '<kind>-<environment>-<token>': an existing deployment is updated in place.
    deployment = _deployment(environmentName="prod")
    token = evaluate(MAIN, "resourceToken", deployment)
    names = evaluate(MAIN, "names", deployment)
    assert names["functionApp"] == f"func-prod-{token}"
    assert names["storage"] == f"st{token}" and names["keyVault"] == f"kv-{token}"
    assert evaluate(MAIN, "deploymentContainerName", deployment) == f"app-package-func-prod-{token}"


def test_names_given_explicitly_are_used_as_given() -> None:
    names = evaluate(MAIN, "names", _deployment(environmentName="prod", functionAppName="Contoso-Alerts",
                                                storageAccountName="contosoalerts", keyVaultName="kv-contoso"))
    assert (names["functionApp"], names["storage"], names["keyVault"]) == (
        "Contoso-Alerts", "contosoalerts", "kv-contoso")
    container = evaluate(MAIN, "deploymentContainerName", _deployment(
        environmentName="prod", functionAppName="Contoso--Alerts-" + "x" * 15 + "-tail"))
    assert re.fullmatch(CONTAINER_RULE, container), container


def test_module_deployment_names_carry_the_resource_token() -> None:
    # Two environments in one resource group run their module deployments side by side without colliding.
    modules = parse(MAIN)["modules"]
    for name, module in modules.items():
        body = resource({"resources": {name: module}}, name)
        assert body["name"].endswith("-${resourceToken}"), f"{name}: {body['name']}"
        assert len(body["name"].replace("${resourceToken}", "x" * 13)) <= 64


# --- checked free-text settings -------------------------------------------------------------------------------------

def test_durable_hub_name_is_3_to_45_characters() -> None:
    template = parse(MAIN)
    assert (_decorator(template, "durableHubName", "min_length"),
            _decorator(template, "durableHubName", "max_length")) == (3, 45)


@pytest.mark.parametrize(("hub", "valid"), [
    ("msspalerts", True), ("Hub2", True), ("a" * 45, True),
    ("2hub", False), ("mssp-alerts", False), ("mssp_alerts", False), ("hub alerts", False), ("hüb", False),
])
def test_durable_hub_name_check_fails_the_deployment_unless_letters_and_digits_from_a_letter(hub: str,
                                                                                           valid: bool) -> None:
    deployment = _deployment(environmentName="prod", durableHubName=hub)
    if valid:
        assert evaluate(MAIN, "checkedDurableHubName", deployment) == hub
    else:
        with pytest.raises(BicepFail, match="durableHubName"):
            evaluate(MAIN, "checkedDurableHubName", deployment)


@pytest.mark.parametrize("prefix", ["", "prod", "Prod2", "a" * 20, "a" * 21, "2prod", "prod-", "pr_od", "pröd"])
def test_tables_prefix_is_accepted_by_the_deployment_exactly_when_the_code_accepts_it(prefix: str) -> None:
    max_length = _decorator(parse(MAIN), "tablesNamePrefix", "max_length")
    try:
        evaluate(MAIN, "checkedTablesNamePrefix", _deployment(environmentName="prod", tablesNamePrefix=prefix))
        deployed = len(prefix) <= max_length
    except BicepFail:
        deployed = False
    try:
        BY_NAME["TABLES_NAME_PREFIX"].parse("TABLES_NAME_PREFIX", prefix)
        accepted = True
    except Exception:  # noqa: BLE001 - any refusal of the code
        accepted = False
    assert deployed == accepted


def test_tables_prefix_keeps_every_table_name_within_azure_limits() -> None:
    longest = max(len(t) for t in parse(MAIN)["variables"]["appTableNames"]["value"])
    assert _decorator(parse(MAIN), "tablesNamePrefix", "max_length") + longest <= 63


# --- Key Vault: teardown and redeploy, and the deployer's secrets -----------------------------------------------------

def test_key_vault_name_takes_a_salt_so_a_soft_deleted_vault_does_not_block_a_redeploy() -> None:
    assert default(parse(MAIN), "keyVaultNameSalt") == ""
    assert _decorator(parse(MAIN), "keyVaultNameSalt", "max_length") == 8
    first = evaluate(MAIN, "names", _deployment(environmentName="e" * 64))["keyVault"]
    again = evaluate(MAIN, "names", _deployment(environmentName="e" * 64, keyVaultNameSalt="2" * 8))["keyVault"]
    assert first != again and again.startswith(first)
    assert re.fullmatch(NAME_RULES["keyVault"], again), again
    with pytest.raises(BicepFail, match="keyVaultNameSalt"):
        evaluate(MAIN, "names", _deployment(environmentName="prod", keyVaultNameSalt="-x"))
    assert "param keyVaultNameSalt = readEnvironmentVariable('KEY_VAULT_NAME_SALT', '')" in (
        INFRA / "main.bicepparam").read_text()


def test_the_deployer_can_be_granted_key_vault_secrets_officer() -> None:
    main = parse(MAIN)
    assert default(main, "deployerPrincipalId") == ""
    assert set(_decorator(main, "deployerPrincipalType", "allowed")) == {"User", "ServicePrincipal", "Group"}
    call = main["modules"]["rbac"]["config"]["params"]
    assert call["deployerPrincipalId"] == "deployerPrincipalId"
    assert call["deployerPrincipalType"] == "deployerPrincipalType"

    rbac = parse(MODULES / "rbac.bicep")
    grant = rbac["resources"]["deployerSecretsOfficer"]["config"]
    assert grant["condition"] == {"operator": {"type": "not", "operands": {"bool_value": {
        "function": {"type": "empty", "parameters": {"item_to_test": "deployerPrincipalId"}}}}}}
    body = resource(rbac, "deployerSecretsOfficer")
    assert body["scope"] == "vault"
    assert body["properties"]["principalId"] == "deployerPrincipalId"
    assert body["properties"]["principalType"] == "deployerPrincipalType"
    # Key Vault Secrets Officer (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
    assert rbac["variables"]["keyVaultSecretsOfficer"]["value"] == "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"

    bicepparam = (INFRA / "main.bicepparam").read_text()
    assert "param deployerPrincipalId = readEnvironmentVariable('AZURE_PRINCIPAL_ID', '')" in bicepparam
    assert "param deployerPrincipalType = readEnvironmentVariable('AZURE_PRINCIPAL_TYPE', 'User')" in bicepparam


# --- one default app registration name --------------------------------------------------------------------------------

def test_both_entry_points_default_to_the_same_app_registration_unique_name() -> None:
    from_main = evaluate(MAIN, "msspAppUniqueName", _deployment(environmentName="msspalerts"))
    bicepparam = (INFRA / "app-registration.bicepparam").read_text()
    match = re.search(r"^param uniqueName = readEnvironmentVariable\('MSSP_APP_UNIQUE_NAME', "
                      r"'(?P<prefix>[^$']*)\$\{readEnvironmentVariable\('AZURE_ENV_NAME', '(?P<env>[^']*)'\)\}'\)$",
                      bicepparam, re.MULTILINE)
    assert match, "app-registration.bicepparam: uniqueName default is not prefix + AZURE_ENV_NAME"
    main_env_default = re.search(r"^param environmentName = readEnvironmentVariable\('AZURE_ENV_NAME', '([^']*)'\)",
                                 (INFRA / "main.bicepparam").read_text(), re.MULTILINE)
    assert main_env_default and main_env_default.group(1) == match.group("env")
    assert from_main == match.group("prefix") + match.group("env")
    assert params(parse(APP_REGISTRATION))["uniqueName"].get("default") is None  # the .bicepparam holds it


# --- telemetry ----------------------------------------------------------------------------------------------------

def test_workspace_based_application_insights_sets_no_retention_of_its_own() -> None:
    template = parse(MODULES / "monitoring.bicep")
    (insights,) = [resource(template, n) for n, r in template["resources"].items()
                   if r["type"] == "Microsoft.Insights/components"]
    assert "RetentionInDays" not in insights["properties"]
    assert insights["properties"]["WorkspaceResourceId"] is not None


# --- make deploy, azd, and what stays local -------------------------------------------------------------------

def _recipe(target: str) -> str:
    makefile = (REPO / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert match, f"Makefile has no {target} target"
    return match.group(1)


def test_make_deploy_retries_publish_and_vault_calls_while_new_role_assignments_spread() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^AZURE_RETRY_TRIES \?= 10$", makefile, re.MULTILINE)
    assert re.search(r"^AZURE_RETRY_WAIT \?= 30$", makefile, re.MULTILINE)
    retry = re.search(r"^AZURE_RETRY = (retry\(\) \{.*?return 1; \})$", makefile, re.MULTILINE | re.DOTALL)
    assert retry, "no AZURE_RETRY shell function"
    body = retry.group(1)
    assert "seq 1 $(AZURE_RETRY_TRIES)" in body and "sleep $(AZURE_RETRY_WAIT)" in body
    assert "403" in body and "AuthorizationPermissionMismatch" in body
    recipe = _recipe("deploy")
    assert "$(AZURE_RETRY)" in recipe
    assert re.search(r"retry func azure functionapp publish", recipe)
    assert re.search(r"retry az keyvault secret set", recipe)
    assert "func azure functionapp publish" not in recipe.replace("retry func azure functionapp publish", "")


def test_make_deploy_passes_the_deployer_so_it_may_store_secrets() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "AZURE_PRINCIPAL_ID" in makefile and "az ad signed-in-user show" in makefile
    for target in ("deploy", "deploy-preview"):
        assert "$(AZURE_DEPLOYER)" in _recipe(target), target


def test_azure_yaml_requires_an_azd_that_bundles_bicep_0_36_1() -> None:
    text = (REPO / "azure.yaml").read_text()
    match = re.search(r"^requiredVersions:\n  azd: \">= (\d+)\.(\d+)\.(\d+)\"$", text, re.MULTILINE)
    assert match, "azure.yaml states no requiredVersions.azd"
    assert tuple(int(g) for g in match.groups()) >= (1, 17, 0)


def _entries(path: str) -> set[str]:
    lines = (REPO / path).read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


@pytest.mark.parametrize("entry", [".python_packages/", ".azure/", ".env", "local/", "tests/", "docs/",
                                   "node_modules/", ".venv/", "infra/", "local.settings.json"])
def test_funcignore_keeps_local_state_out_of_the_package(entry: str) -> None:
    assert entry in _entries(".funcignore")


@pytest.mark.parametrize("entry", [".azure/", ".python_packages/", "local.settings.json", ".venv/"])
def test_gitignore_keeps_local_state_out_of_the_repo(entry: str) -> None:
    assert entry in _entries(".gitignore")


# --- the README says what the templates do --------------------------------------------------------------------------

_NUMBERS = {"six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}


def test_readme_counts_the_platform_settings_right() -> None:
    from tests.infra.test_app_settings import PLATFORM

    match = re.search(r"plus (\w+) platform settings", (INFRA / "README.md").read_text())
    assert match and _NUMBERS.get(match.group(1)) == len(PLATFORM)


def test_readme_covers_what_a_first_deployment_trips_on() -> None:
    readme = " ".join((INFRA / "README.md").read_text().split())
    for needed in ("az provider register --namespace Microsoft.App", "what-if", "Standard_ZRS", "keyVaultNameSalt",
                   "deployerPrincipalId", "sovereign", "groupMembershipClaims", "DirectoryRole",
                   "ID tokens (used for implicit and hybrid flows)", "SecurityAlert.Read.All", "Alert.Read.All",
                   "openid", "profile"):
        assert needed.lower() in readme.lower(), needed
