metadata description = 'MSSP Defender alerts: a Flex Consumption function app with its storage, telemetry, Key Vault and identity, the multi-tenant app registration customers consent to, and every app setting the code reads. Deploy to a resource group: az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam.'

targetScope = 'resourceGroup'

import { keyVaultSecretNamesType } from 'modules/app-settings.bicep'

// --- naming and placement -----------------------------------------------------------------------------

@description('Required. Name of this deployment, as azd allows it (1-64 letters, digits, hyphens, underscores, periods and parentheses, e.g. prod); the azd-env-name tag. Generated resource names use a short form of it (lower-case letters, digits and single hyphens, at most 20 characters) and a token unique to subscription, resource group and name.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Optional. Azure region; must offer Flex Consumption. Defaults to the resource group\'s region.')
param location string = resourceGroup().location

@description('Optional. Tags added to every resource.')
param tags object = {}

@description('Optional. Function app name; generated when empty. Its host name becomes the consent callback\'s.')
param functionAppName string = ''

@description('Optional. Storage account name; generated when empty.')
param storageAccountName string = ''

@description('Optional. Key Vault name; generated when empty (kv-<token><keyVaultNameSalt>).')
param keyVaultName string = ''

@description('Optional. Lower-case letters and digits appended to the generated Key Vault name. A deleted vault keeps its name for the soft-delete period (90 days, and with purge protection it cannot be purged), so a redeploy after tearing the resource group down needs a new name: set this to any new value, e.g. 2 (infra/README.md).')
@maxLength(8)
param keyVaultNameSalt string = ''

@description('Optional. Purge protection of the Key Vault: a deleted vault or secret cannot be purged before its soft-delete period ends. Irreversible once on. Off only for throw-away environments, so that azd down --purge frees the name.')
param keyVaultPurgeProtection bool = true

@description('Optional. Object id of the principal running the deployment (azd sets AZURE_PRINCIPAL_ID; make deploy passes the signed-in user). Granted Key Vault Secrets Officer on the vault, which the secrets infra/README.md stores and make deploy\'s siem-token-key need. Empty: no grant.')
param deployerPrincipalId string = ''

@description('Optional. Type of deployerPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

// --- scale and retention ------------------------------------------------------------------------------

// 2048: one Python worker uses about one vCPU, which 2,048 MB gives (docs/CAPACITY.md, "The values set").
@description('Optional. Memory of each function app instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// 40, the lowest Flex allows: the model needs 28-32 instances at the ~90,000 tenants a tick can take, and more only
// push the Tenants partition past its target (docs/CAPACITY.md, "The values set").
@description('Optional. Maximum number of function app instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Optional. Storage replication (the account also holds the app\'s tables). Locally redundant by default because zone-redundant storage is not offered in every Flex Consumption region; choose Standard_ZRS where it is (infra/README.md). An existing account keeps the redundancy it was created with: pass that value.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_LRS'

@description('Optional. Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Optional. Daily Log Analytics ingestion cap in GB (-1 for none).')
param logDailyQuotaGb int = 5

// --- the multi-tenant app registration ----------------------------------------------------------------

@description('Optional. Create the multi-tenant app registration and grant Mail.Send with the Microsoft Graph Bicep extension in this deployment. false: register the app by hand or deploy app-registration.bicep separately, and pass existingMsspAppClientId.')
param createAppRegistration bool = true

@description('Optional. Unique name of the app registration (its key for the Graph extension); app-registration.bicepparam has the same default.')
param msspAppUniqueName string = 'mssp-defender-alerts-${environmentName}'

@description('Optional. Display name customers see on the consent screen.')
param msspAppDisplayName string = 'MSSP Defender alerts'

@description('Optional. Grant Microsoft Graph Mail.Send (application) to the function app\'s identity, tenant-wide (with createAppRegistration). Off by default: Mail.Send can send as any mailbox. Scope sending to the sender mailbox with Exchange Online RBAC for Applications and leave this off, or create an application access policy first and then turn it on (infra/README.md).')
param grantMailSend bool = false

@description('Optional. Client id of an app registration made outside this deployment (with createAppRegistration = false).')
param existingMsspAppClientId string = ''

@description('Optional. How the multi-tenant app authenticates to customer tenants: federated needs no secret; secret and certificate read keyVaultSecretNames.')
@allowed([
  'federated'
  'secret'
  'certificate'
])
param msspAppCredential string = 'federated'

@description('Optional. Audience of the managed identity token the federated credential exchanges (api://AzureADTokenExchangeUSGov or api://AzureADTokenExchangeChina in sovereign clouds).')
param msspAppFederationAudience string = 'api://AzureADTokenExchange'

@description('Optional. Key Vault secret names of the secret settings (created in the vault after deployment; infra/README.md).')
param keyVaultSecretNames keyVaultSecretNamesType = {}

// --- settings the code reads (defaults equal shared/settings.py; tests/infra checks that) ---------------

@description('Optional. Prefix of the app\'s table names, for several deployments in one account: letters and digits, starting with a letter (Azure table names), at most 20 (what shared/settings.py accepts; the longest table name stays within Azure\'s 63).')
@maxLength(20)
param tablesNamePrefix string = ''

@description('Optional. NCRONTAB schedule (six fields, UTC) of alert ingestion.')
param fetchAlertsSchedule string = '0 */5 * * * *'

@description('Optional. NCRONTAB schedule (six fields, UTC) of the access-verification retries.')
param verificationSchedule string = '0 */2 * * * *'

@description('Optional. NCRONTAB schedule (six fields, UTC) of the daily retention clean-up.')
param retentionSchedule string = '0 30 3 * * *'

@description('Optional. NCRONTAB schedule of the operational-notices check (OPS_NOTICES_SCHEDULE).')
param opsNoticesSchedule string = '0 */5 * * * *'

@description('Optional. Durable Functions task hub name: 3-45 letters and digits, starting with a letter (https://learn.microsoft.com/azure/azure-functions/durable/durable-functions-task-hubs).')
@minLength(3)
@maxLength(45)
param durableHubName string = 'msspalerts'

@description('Optional. How long a consent link stays valid (30s, 15m, 12h, 7d).')
param invitationTtl string = '7d'

@description('Optional. How long access verification is retried after consent.')
param verificationTimeout string = '24h'

@description('Optional. Timeout of one outbound HTTP request in seconds.')
@minValue(1)
param httpTimeoutSeconds int = 30

@description('Optional. Entra ID authority host (sovereign clouds change it).')
param entraAuthorityHost string = 'https://login.microsoftonline.com'

@description('Optional. Microsoft Graph host.')
param graphApiHost string = 'https://graph.microsoft.com'

@description('Optional. Microsoft Graph token resource.')
param graphApiResource string = 'https://graph.microsoft.com'

@description('Optional. Defender for Endpoint API host.')
param defenderApiHost string = 'https://api.security.microsoft.com'

@description('Optional. Defender for Endpoint token resource.')
param defenderApiResource string = 'https://api.securitycenter.microsoft.com'

@description('Optional. Defender portal host for alert deep links.')
param portalHost string = 'https://security.microsoft.com'

@description('Optional. Tenant id of the MSSP analysts\' Entra tenant (MSSP_TENANT_ID), which customers add as a connected organization to give the analysts Defender portal access (the page customers see after consent). Microsoft suggests a dedicated tenant for the analysts; empty: the page names msspTenantDomain only.')
param msspTenantId string = ''

@description('Optional. A verified domain of the MSSP analysts\' tenant, e.g. mssp.onmicrosoft.com (MSSP_TENANT_DOMAIN).')
param msspTenantDomain string = ''

@description('Required. How notification e-mail leaves (MAIL_TRANSPORT): graph (sendMail from mailSender\'s mailbox with the app\'s identity, which holds Mail.Send in this tenant) or smtp (an SMTP relay; set SMTP_* through settingOverrides and SMTP_PASSWORD through keyVaultSecretNames). The code\'s default, smtp, suits local development with MailDev.')
@allowed([
  'graph'
  'smtp'
])
param mailTransport string

@description('Required. From address of every e-mail (MAIL_SENDER); with graph, the mailbox that sends, to which Mail.Send must be restricted (infra/README.md).')
param mailSender string

@description('Optional. Where operational notices go (OPS_EMAIL): consent revoked, tenants failing or silent, credential expiry. Empty: no notices.')
param opsEmail string = ''

@description('Optional. Any other non-secret setting of shared/settings.py to change from the code\'s default, by name, e.g. { FETCH_CONCURRENCY: \'32\' } (values are strings).')
param settingOverrides object = {}

// The app's tables (shared/tables.py Table); tests/infra checks the list against the code.
var appTableNames = [
  'Tenants'
  'Invitations'
  'Alerts'
  'NotificationRules'
  'DeliveryLog'
  'Incidents'
  'AlertFeed'
  'SendRate'
  'IngestLeases'
]

// Ingestion's work queue and the poison queue the Functions host moves failed messages to (fetch_alerts/tenant_queue.py).
var appQueueNames = [
  'ingest-tenants'
  'ingest-tenants-poison'
]

// --- names -------------------------------------------------------------------------------------------------
// Bicep has no regular expressions (no pattern decorator), so names are made valid by construction and the two
// free-text settings are checked character by character; a bad value stops the deployment before anything is
// created, with fail() (https://learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-flow-control).
// Name rules: https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules

@description('value in lower case with every run of characters other than a-z and 0-9 made one hyphen, cut to maxLength, without leading or trailing hyphens (possibly empty).')
func nameSlug(value string, maxLength int) string => join(filter(split(take(join(filter(split(join(map(range(0, length(value)), i => contains('abcdefghijklmnopqrstuvwxyz0123456789', substring(toLower(value), i, 1)) ? substring(toLower(value), i, 1) : '-'), ''), '-'), part => !empty(part)), '-'), maxLength), '-'), part => !empty(part)), '-')

@description('Whether value holds only ASCII letters and digits and starts with a letter: Durable task hubs, Azure table names.')
func isLettersAndDigitsFromALetter(value string) bool => (length(value) > 0) && contains('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ', first(value)) && empty(filter(map(range(0, length(value)), i => substring(value, i, 1)), c => !contains('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789', c)))

var checkedDurableHubName = (isLettersAndDigitsFromALetter(durableHubName)) ? durableHubName : fail('durableHubName must be 3-45 letters and digits, starting with a letter.')
var checkedTablesNamePrefix = (empty(tablesNamePrefix) || isLettersAndDigitsFromALetter(tablesNamePrefix)) ? tablesNamePrefix : fail('tablesNamePrefix must be empty or letters and digits starting with a letter.')
var checkedKeyVaultNameSalt = (empty(keyVaultNameSalt) || empty(filter(map(range(0, length(keyVaultNameSalt)), i => substring(keyVaultNameSalt, i, 1)), c => !contains('abcdefghijklmnopqrstuvwxyz0123456789', c)))) ? keyVaultNameSalt : fail('keyVaultNameSalt must be lower-case letters and digits.')

// 13 lower-case letters and digits, the same on every deployment of this environment to this resource group.
var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var environmentSlug = nameSlug(environmentName, 20)
// <environment>-<token>, or the token alone when the environment name has no letter or digit.
var nameStem = empty(environmentSlug) ? resourceToken : '${environmentSlug}-${resourceToken}'
var allTags = union(tags, { 'azd-env-name': environmentName })
var names = {
  identity: 'id-${nameStem}' // 3-128
  storage: empty(storageAccountName) ? 'st${resourceToken}' : storageAccountName // 3-24 lower-case letters and digits
  keyVault: empty(keyVaultName) ? 'kv-${resourceToken}${checkedKeyVaultNameSalt}' : keyVaultName // 3-24, from a letter
  logAnalytics: 'log-${nameStem}' // 4-63
  applicationInsights: 'appi-${nameStem}' // 1-260
  plan: 'plan-${nameStem}' // 1-60
  functionApp: empty(functionAppName) ? 'func-${nameStem}' : functionAppName // 2-60, no leading or trailing hyphen
}
var functionAppSlug = nameSlug(names.functionApp, 32)
// One container per app: Flex Consumption reads the package from here with the identity (3-63, lower case, single hyphens).
var deploymentContainerName = 'app-package-${functionAppSlug}'
var consentCallbackPath = '/api/consent/callback'

module identity 'modules/identity.bicep' = {
  name: 'identity-${resourceToken}'
  params: {
    name: names.identity
    location: location
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage-${resourceToken}'
  params: {
    name: names.storage
    location: location
    tags: allTags
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    tableNames: [for table in appTableNames: '${checkedTablesNamePrefix}${table}']
    queueNames: appQueueNames
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring-${resourceToken}'
  params: {
    logAnalyticsName: names.logAnalytics
    applicationInsightsName: names.applicationInsights
    location: location
    tags: allTags
    retentionInDays: logRetentionInDays
    dailyQuotaGb: logDailyQuotaGb
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault-${resourceToken}'
  params: {
    name: names.keyVault
    location: location
    tags: allTags
    enablePurgeProtection: keyVaultPurgeProtection
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac-${resourceToken}'
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app-${resourceToken}'
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: allTags
    identityResourceId: identity.outputs.resourceId
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
  // The platform reads the package container with the identity as soon as the site exists.
  dependsOn: [
    rbac
  ]
}

// Needs the site's host name (redirect URI); the app settings below need its client id: one deployment.
module appRegistration 'app-registration.bicep' = if (createAppRegistration) {
  name: 'app-registration-${resourceToken}'
  params: {
    uniqueName: msspAppUniqueName
    displayName: msspAppDisplayName
    redirectUri: 'https://${functionApp.outputs.defaultHostName}${consentCallbackPath}'
    managedIdentityPrincipalId: identity.outputs.principalId
    federationAudience: msspAppFederationAudience
    grantMailSend: grantMailSend
  }
}

var effectiveMsspAppClientId = createAppRegistration ? appRegistration!.outputs.clientId : existingMsspAppClientId

module appSettings 'modules/app-settings.bicep' = {
  name: 'app-settings-${resourceToken}'
  params: {
    functionAppName: functionApp.outputs.name
    managedIdentityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.uri
    publicBaseUrl: 'https://${functionApp.outputs.defaultHostName}'
    msspAppClientId: effectiveMsspAppClientId
    // SIEM_TOKEN_KEY always comes from the vault: make deploy creates the secret once (random) if it is missing.
    keyVaultSecretNames: union({ SIEM_TOKEN_KEY: 'siem-token-key' }, keyVaultSecretNames)
    tablesNamePrefix: checkedTablesNamePrefix
    fetchAlertsSchedule: fetchAlertsSchedule
    durableHubName: checkedDurableHubName
    entraAuthorityHost: entraAuthorityHost
    graphApiHost: graphApiHost
    graphApiResource: graphApiResource
    defenderApiHost: defenderApiHost
    defenderApiResource: defenderApiResource
    portalHost: portalHost
    msspTenantId: msspTenantId
    msspTenantDomain: msspTenantDomain
    httpTimeoutSeconds: httpTimeoutSeconds
    msspAppCredential: msspAppCredential
    msspAppFederationAudience: msspAppFederationAudience
    invitationTtl: invitationTtl
    verificationSchedule: verificationSchedule
    verificationTimeout: verificationTimeout
    retentionSchedule: retentionSchedule
    opsNoticesSchedule: opsNoticesSchedule
    mailTransport: mailTransport
    mailSender: mailSender
    opsEmail: opsEmail
    settingOverrides: settingOverrides
  }
}

@description('Name of the function app: func azure functionapp publish <this>.')
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name

@description('Base URL of the function app.')
output FUNCTION_APP_BASE_URL string = 'https://${functionApp.outputs.defaultHostName}'

@description('Consent callback URL: the redirect URI of the multi-tenant app.')
output CONSENT_CALLBACK_URL string = 'https://${functionApp.outputs.defaultHostName}${consentCallbackPath}'

@description('Client id of the multi-tenant app (empty until one is registered).')
output MSSP_APP_CLIENT_ID string = effectiveMsspAppClientId

@description('Object (principal) id of the function app\'s identity: federated credential subject and Mail.Send assignee.')
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId

@description('Client id of the function app\'s identity.')
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId

@description('Name of the Key Vault that holds the optional secrets.')
output KEY_VAULT_NAME string = keyVault.outputs.name

@description('Name of the storage account.')
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
