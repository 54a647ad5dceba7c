"""What infra/ creates, as infra/README.md describes it: keyless storage, Entra-only telemetry, an RBAC Key Vault, a
Flex Consumption Python 3.11 app running as the user-assigned identity with the roles it needs, and a
multi-tenant app that asks customers for alert reads only and holds no secret."""

from __future__ import annotations

import json

from tests.infra.bicep import APP_REGISTRATION, INFRA, MAIN, default, params, parse, resource

MODULES = INFRA / "modules"


def _resources_of_type(path_name: str, type_: str) -> dict[str, dict]:
    template = parse(MODULES / path_name)
    return {name: resource(template, name) for name, r in template["resources"].items()
            if r["type"] == type_ and not r["existing"]}


def test_storage_accepts_only_entra_id_over_tls_12_without_public_blobs() -> None:
    (account,) = _resources_of_type("storage.bicep", "Microsoft.Storage/storageAccounts").values()
    properties = account["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["allowBlobPublicAccess"] is False
    assert properties["supportsHttpsTrafficOnly"] is True


def test_storage_creates_the_deployment_container_and_the_app_tables() -> None:
    (container,) = _resources_of_type(
        "storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers").values()
    assert container["properties"]["publicAccess"] == "None"
    template = parse(MODULES / "storage.bicep")
    (tables,) = [r["config"] for r in template["resources"].values()
                 if r["type"] == "Microsoft.Storage/storageAccounts/tableServices/tables"]
    assert tables["loop_type"]["detail"]["array_name"] == "tableNames"
    assert tables["config"]["name"] == tables["loop_type"]["detail"]["item_name"]


def test_monitoring_disables_local_authentication() -> None:
    (workspace,) = _resources_of_type("monitoring.bicep", "Microsoft.OperationalInsights/workspaces").values()
    (insights,) = _resources_of_type("monitoring.bicep", "Microsoft.Insights/components").values()
    assert workspace["properties"]["features"]["disableLocalAuth"] is True
    assert insights["properties"]["DisableLocalAuth"] is True
    assert insights["properties"]["WorkspaceResourceId"] is not None


def test_key_vault_uses_rbac_soft_delete_and_purge_protection() -> None:
    (vault,) = _resources_of_type("keyvault.bicep", "Microsoft.KeyVault/vaults").values()
    properties = vault["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    # Purge protection is a parameter, on by default; off is sent as no value (the service refuses false).
    assert properties["enablePurgeProtection"] == {"operator": {"type": "conditional", "operands": {
        "condition": "enablePurgeProtection", "true_value": True, "false_value": None}}}
    assert default(parse(MODULES / "keyvault.bicep"), "enablePurgeProtection") is True
    assert default(parse(MAIN), "keyVaultPurgeProtection") is True
    assert parse(MAIN)["modules"]["keyVault"]["config"]["params"]["enablePurgeProtection"] == "keyVaultPurgeProtection"


def test_function_app_runs_python_311_on_flex_consumption_as_the_user_assigned_identity() -> None:
    template = parse(MODULES / "function-app.bicep")
    (plan,) = _resources_of_type("function-app.bicep", "Microsoft.Web/serverfarms").values()
    (site,) = _resources_of_type("function-app.bicep", "Microsoft.Web/sites").values()
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"]["name"] == "python"
    assert template["variables"][config["runtime"]["version"]]["value"] == "3.11"
    assert config["deployment"]["storage"]["authentication"] == {
        "type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityResourceId"}
    assert config["scaleAndConcurrency"] == {
        "instanceMemoryMB": "instanceMemoryMB", "maximumInstanceCount": "maximumInstanceCount"}
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityResourceId"
    assert site["properties"]["httpsOnly"] is True


def test_function_app_leaves_the_runtime_out_of_site_config() -> None:
    (site,) = _resources_of_type("function-app.bicep", "Microsoft.Web/sites").values()
    site_config = site["properties"].get("siteConfig") or {}
    assert "linuxFxVersion" not in site_config and "appSettings" not in site_config


def test_instance_memory_and_maximum_instances_are_parameters() -> None:
    declared = params(parse(MODULES / "function-app.bicep"))
    assert declared["instanceMemoryMB"]["type"] == "int"
    assert declared["maximumInstanceCount"]["type"] == "int"


def test_identity_gets_each_role_once_on_its_own_scope_with_a_deterministic_name() -> None:
    template = parse(MODULES / "rbac.bicep")
    roles = template["variables"]["roles"]["value"]
    assert set(roles.values()) == {
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
        "3913510d-42f4-4e42-8a64-420c390055eb",  # Monitoring Metrics Publisher
        "4633458b-17de-408a-b874-0445c86b69e6",  # Key Vault Secrets User
    }
    assigned = []
    for resource_name, body in _resources_of_type("rbac.bicep", "Microsoft.Authorization/roleAssignments").items():
        if resource_name == "deployerSecretsOfficer":
            continue  # the deployer's optional grant: tests/infra/test_deploy.py
        name = body["name"]["function"]
        assert name["type"] == "guid"
        scope_id, principal, role = name["parameters"].values()
        assert scope_id["operator"]["operands"] == {"operand_1": body["scope"], "operand_2": "id"}
        assert principal == body["properties"]["principalId"] == "principalId"
        assert body["properties"]["principalType"] == "ServicePrincipal"
        assigned.append(role["operator"]["operands"]["operand_2"])
    assert sorted(assigned) == sorted(roles)


def _app_registration() -> dict:
    template = parse(APP_REGISTRATION)
    return {name: resource(template, name) for name in template["resources"]}


def test_multi_tenant_app_signs_in_any_organisation_and_redirects_to_the_callback() -> None:
    application = _app_registration()["application"]
    assert application["signInAudience"] == "AzureADMultipleOrgs"
    assert application["web"]["redirectUris"] == ["redirectUri"]


def test_multi_tenant_app_issues_id_tokens_for_the_consent_sign_in_and_never_access_tokens() -> None:
    implicit = _app_registration()["application"]["web"]["implicitGrantSettings"]
    assert implicit == {"enableAccessTokenIssuance": False, "enableIdTokenIssuance": True}
    # The id_token names the user's directory roles (`wids`): only an administrator confirms a consent.
    assert _app_registration()["application"]["groupMembershipClaims"] == "DirectoryRole"


def test_multi_tenant_app_asks_only_for_alert_read_permissions_and_sign_in() -> None:
    template = parse(APP_REGISTRATION)
    variables = {name: v["value"] for name, v in template["variables"].items()}
    requested = {(variables[api["resourceAppId"]], variables[access["id"]], access["type"])
                 for api in _app_registration()["application"]["requiredResourceAccess"]
                 for access in api["resourceAccess"]}
    assert requested == {
        ("00000003-0000-0000-c000-000000000000", "472e4a4d-bb4a-4026-98d1-0b0d74cb74a5", "Role"),  # Graph
        ("00000003-0000-0000-c000-000000000000", "37f7f235-527c-4136-accd-4a02d197296e", "Scope"),  # openid
        ("00000003-0000-0000-c000-000000000000", "14dad69e-099b-42c9-810b-d002981feec1", "Scope"),  # profile
        ("fc780465-2017-40d4-a0c5-307022471b92", "71fe6b80-7034-4028-9ed8-0f316df9c3ff", "Role"),  # Defender
    }


def test_multi_tenant_app_holds_no_secret_or_certificate() -> None:
    application = _app_registration()["application"]
    assert "passwordCredentials" not in application and "keyCredentials" not in application


def test_federated_credential_trusts_the_function_app_identity() -> None:
    credential = _app_registration()["application__functionAppIdentity"]
    assert credential["issuer"] == "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"
    assert credential["subject"] == "managedIdentityPrincipalId"
    assert credential["audiences"] == ["federationAudience"]


def test_mail_send_goes_to_the_function_app_identity_never_to_the_multi_tenant_app() -> None:
    template = parse(APP_REGISTRATION)
    assignment = _app_registration()["mailSend"]
    assert template["variables"][assignment["appRoleId"]]["value"] == "b633e1c5-b582-4048-a93e-9f11b44c7e96"
    assert assignment["principalId"] == "managedIdentityPrincipalId"
    assert "application" not in json.dumps(assignment)


def test_mail_send_is_not_granted_tenant_wide_by_default() -> None:
    # Mail.Send as an application permission sends as any mailbox; scoping it is an explicit step first.
    for path in (MAIN, APP_REGISTRATION):
        assert default(parse(path), "grantMailSend") is False, path.name
