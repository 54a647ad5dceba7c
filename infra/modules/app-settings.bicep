metadata description = 'The function app\'s app settings, as their own child resource: every setting the code reads (shared/settings.py SETTINGS) and the platform settings the Functions host needs, nothing else. tests/infra checks both lists.'

@description('Required. Name of the function app (created by function-app.bicep).')
param functionAppName string

// --- values produced by the other modules -------------------------------------------------------------

@description('Required. Client id of the user-assigned identity the app runs as.')
param managedIdentityClientId string

@description('Required. Blob endpoint of the storage account (ends with a slash).')
param storageBlobEndpoint string

@description('Required. Queue endpoint of the storage account (ends with a slash).')
param storageQueueEndpoint string

@description('Required. Table endpoint of the storage account (ends with a slash).')
param storageTableEndpoint string

@description('Required. Application Insights connection string.')
param applicationInsightsConnectionString string

@description('Required. Key Vault URI (ends with a slash); base of the Key Vault references.')
param keyVaultUri string

@description('Required. Public base URL of the app, https://<default host name>.')
param publicBaseUrl string

@description('Required. Application (client) id of the multi-tenant app customers consent to.')
param msspAppClientId string

// --- settings an MSSP may tune (defaults live in main.bicep and equal those of shared/settings.py) --------

@description('Required. Prefix of the app\'s table names (TABLES_NAME_PREFIX).')
param tablesNamePrefix string

@description('Required. NCRONTAB schedule of the ingestion timer (FETCH_ALERTS_SCHEDULE).')
param fetchAlertsSchedule string

@description('Required. Durable Functions task hub name (DURABLE_HUB_NAME).')
param durableHubName string

@description('Required. Entra ID authority host (ENTRA_AUTHORITY_HOST).')
param entraAuthorityHost string

@description('Required. Microsoft Graph host (GRAPH_API_HOST).')
param graphApiHost string

@description('Required. Microsoft Graph token resource (GRAPH_API_RESOURCE).')
param graphApiResource string

@description('Required. Defender for Endpoint API host (DEFENDER_API_HOST).')
param defenderApiHost string

@description('Required. Defender for Endpoint token resource (DEFENDER_API_RESOURCE).')
param defenderApiResource string

@description('Required. Defender portal host for deep links (PORTAL_HOST).')
param portalHost string

@description('Required. The MSSP analysts\' tenant id, which customers add as a connected organization (MSSP_TENANT_ID); empty: MSSP_TENANT_DOMAIN only.')
param msspTenantId string

@description('Required. A verified domain of the MSSP analysts\' tenant (MSSP_TENANT_DOMAIN); may be empty.')
param msspTenantDomain string

@description('Required. Timeout of one outbound HTTP request in seconds (HTTP_TIMEOUT_SECONDS).')
param httpTimeoutSeconds int

@description('Required. How the multi-tenant app authenticates to customer tenants (MSSP_APP_CREDENTIAL).')
param msspAppCredential string

@description('Required. Audience of the managed identity token the federated credential exchanges (MSSP_APP_FEDERATION_AUDIENCE).')
param msspAppFederationAudience string

@description('Required. How long a consent link stays valid (INVITATION_TTL).')
param invitationTtl string

@description('Required. NCRONTAB schedule of the access-verification retry timer (VERIFICATION_SCHEDULE).')
param verificationSchedule string

@description('Required. How long verification is retried after consent (VERIFICATION_TIMEOUT).')
param verificationTimeout string

@description('Required. NCRONTAB schedule of the daily retention clean-up (RETENTION_SCHEDULE).')
param retentionSchedule string

@description('Required. NCRONTAB schedule of the operational-notices check (OPS_NOTICES_SCHEDULE).')
param opsNoticesSchedule string

@description('Required. How notification e-mail leaves (MAIL_TRANSPORT): graph or smtp.')
param mailTransport string

@description('Required. From address of every e-mail (MAIL_SENDER).')
param mailSender string

@description('Required. Address of the operational notices (OPS_EMAIL); empty for none.')
param opsEmail string

@description('Optional. Values for any other non-secret setting of shared/settings.py, by name, e.g. { FETCH_CONCURRENCY: \'32\' }; they win over the values below.')
param settingOverrides object = {}

@description('Optional. Key Vault secret names of the secret settings; a setting whose secret is not named stays empty.')
param keyVaultSecretNames keyVaultSecretNamesType = {}

@export()
@description('Key Vault secret names, one per secret app setting. Adding a secret setting: one line here and one in the settings below.')
type keyVaultSecretNamesType = {
  // Shared key that signs onboarding webhook requests; unset: the webhook is not signed.
  ONBOARDING_WEBHOOK_SECRET: string?
  // The multi-tenant app's client secret, only with msspAppCredential = 'secret'.
  MSSP_APP_CLIENT_SECRET: string?
  // The multi-tenant app's certificate (a Key Vault certificate's secret), only with msspAppCredential = 'certificate'.
  MSSP_APP_CERTIFICATE: string?
  // Key that MACs the SIEM pull API's continuation tokens; make deploy creates it once if it is missing.
  SIEM_TOKEN_KEY: string?
  // Password of the SMTP relay, only with mailTransport = 'smtp' and a relay that needs login.
  SMTP_PASSWORD: string?
  // Client secret of a single-tenant mail app, only with MAIL_CREDENTIAL = 'client_secret'.
  MAIL_APP_CLIENT_SECRET: string?
}

@description('A Key Vault reference resolved by the app\'s identity, or empty when no secret is named (an unresolvable reference would reach the code as literal text).')
func keyVaultReference(vaultUri string, secretName string) string => empty(secretName) ? '' : '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/${secretName}/)'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// Every app setting, by name. A setting the code registers gets one line here (tests/infra checks it).
var appSettingValues = {
  // Platform settings (not in shared/settings.py): each line says why the host needs it.
  AzureWebJobsStorage__credential: 'managedidentity' // host storage through Entra ID: the account has no usable keys
  AzureWebJobsStorage__clientId: managedIdentityClientId // which identity the host (and the ingestion timer's queue client) uses: user-assigned
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint // host leases, timer status and Durable large payloads
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint // Durable control and work-item queues; ingestion's queue (trigger and timer)
  AzureWebJobsStorage__tableServiceUri: storageTableEndpoint // Durable history and instance tables
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString // where the host and worker send telemetry
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${managedIdentityClientId};Authorization=AAD' // Entra auth for telemetry: local auth is disabled
  MALLOC_ARENA_MAX: '2' // glibc, read when the worker starts: a third less peak memory for ingestion's many short-lived threads (README)

  // Settings the code reads (shared/settings.py SETTINGS).
  TABLES_ENDPOINT: storageTableEndpoint
  TABLES_NAME_PREFIX: tablesNamePrefix
  AZURE_CLIENT_ID: managedIdentityClientId
  FETCH_ALERTS_SCHEDULE: fetchAlertsSchedule
  DURABLE_HUB_NAME: durableHubName
  ENTRA_AUTHORITY_HOST: entraAuthorityHost
  ENTRA_DISABLE_INSTANCE_DISCOVERY: 'false' // instance discovery is only skipped for the local cloud
  GRAPH_API_HOST: graphApiHost
  GRAPH_API_RESOURCE: graphApiResource
  DEFENDER_API_HOST: defenderApiHost
  DEFENDER_API_RESOURCE: defenderApiResource
  PORTAL_HOST: portalHost
  HTTP_TIMEOUT_SECONDS: string(httpTimeoutSeconds)
  MSSP_APP_CLIENT_ID: msspAppClientId
  MSSP_APP_CREDENTIAL: msspAppCredential
  MSSP_APP_FEDERATION_AUDIENCE: msspAppFederationAudience
  MSSP_APP_CLIENT_SECRET: keyVaultReference(keyVaultUri, keyVaultSecretNames.?MSSP_APP_CLIENT_SECRET ?? '')
  MSSP_APP_CERTIFICATE: keyVaultReference(keyVaultUri, keyVaultSecretNames.?MSSP_APP_CERTIFICATE ?? '')
  PUBLIC_BASE_URL: publicBaseUrl
  ONBOARDING_WEBHOOK_SECRET: keyVaultReference(keyVaultUri, keyVaultSecretNames.?ONBOARDING_WEBHOOK_SECRET ?? '')
  INVITATION_TTL: invitationTtl
  VERIFICATION_SCHEDULE: verificationSchedule
  VERIFICATION_TIMEOUT: verificationTimeout
  OUTBOUND_ALLOW_LOOPBACK: 'false' // loopback callbacks are for local development only
  SIEM_TOKEN_KEY: keyVaultReference(keyVaultUri, keyVaultSecretNames.?SIEM_TOKEN_KEY ?? '')

  // The customer's portal-access page (grant_access/portal_access.py): the names are the code's defaults,
  // changed through settingOverrides.
  MSSP_TENANT_ID: msspTenantId
  MSSP_TENANT_DOMAIN: msspTenantDomain
  MSSP_TIER1_GROUP: 'MSSP Tier 1 Analysts'
  MSSP_TIER2_GROUP: 'MSSP Tier 2 Analysts'
  MSSP_APPROVERS_GROUP: 'MSSP Analyst Approvers'
  MSSP_ACCESS_CATALOG: 'MSSP Accesses'

  // Ingestion limits and retention: the code's defaults, changed through settingOverrides.
  FETCH_CONCURRENCY: '16'
  FETCH_OVERLAP_MINUTES: '15'
  FETCH_LOOKBACK_DAYS: '7'
  FETCH_MAX_PAGES_PER_TENANT: '100'
  FETCH_REREAD_PAGES_PER_TICK: '4'
  FETCH_TIME_BUDGET_SECONDS: '480'
  FETCH_MESSAGE_TTL_SECONDS: '300'
  FETCH_DRAIN_WAIT_SECONDS: '240'
  FETCH_LEASE_SECONDS: '60'
  FETCH_GRAPH_PAGE_SIZE: '1000'
  FETCH_DEFENDER_PAGE_SIZE: '1000'
  FETCH_MAX_ATTEMPTS: '5'
  FETCH_BACKOFF_MS: '500'
  GRAPH_CALLS_PER_MINUTE: '150'
  DEFENDER_CALLS_PER_MINUTE: '100'
  DEFENDER_CALLS_PER_HOUR: '1500'
  GLOBAL_API_CALLS_PER_MINUTE: '6000'
  RETENTION_DAYS: '180'
  RETENTION_SCHEDULE: retentionSchedule
  SIEM_FEED_SETTLE_SECONDS: '30'

  // Notification runs: the code's defaults, changed through settingOverrides.
  DUPLICATE_POLICY: 'resend'
  NOTIFY_CLAIM_TIMEOUT: '30m'
  NOTIFY_BATCH_SIZE: '100'
  NOTIFY_SEND_MAX_ATTEMPTS: '4'
  NOTIFY_RETRY_BACKOFF_SECONDS: '5'
  NOTIFY_GIVE_UP_AFTER_RUNS: '12'
  NOTIFY_DIGEST_MAX_ITEMS: '50'

  // E-mail: Graph from the MSSP's own mailbox with the app's identity, or an SMTP relay.
  MAIL_TRANSPORT: mailTransport
  MAIL_SENDER: mailSender
  MAIL_SENDER_NAME: 'MSSP alert notifications'
  MAIL_CREDENTIAL: 'managed_identity'
  MAIL_APP_TENANT_ID: ''
  MAIL_APP_CLIENT_ID: ''
  MAIL_APP_CLIENT_SECRET: keyVaultReference(keyVaultUri, keyVaultSecretNames.?MAIL_APP_CLIENT_SECRET ?? '')
  MAIL_RETRY_BUDGET_SECONDS: '30'
  SMTP_HOST: ''
  SMTP_PORT: '25'
  SMTP_STARTTLS: 'false'
  SMTP_USERNAME: ''
  SMTP_PASSWORD: keyVaultReference(keyVaultUri, keyVaultSecretNames.?SMTP_PASSWORD ?? '')
  SEND_RATE_PER_MINUTE: '30'
  SEND_RATE_PER_DAY: '10000'

  // Operational notices to the MSSP.
  OPS_EMAIL: opsEmail
  OPS_NOTICES_SCHEDULE: opsNoticesSchedule
  OPS_FAILING_RUNS: '3'
  OPS_SILENT_HOURS: '48'
  OPS_CREDENTIAL_WARNING_DAYS: '30'
  MSSP_CREDENTIAL_EXPIRES_AT: ''
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: checkov reads every sites/config resource as the site's web configuration; this one is 'appsettings' and holds none (the site itself is checked in function-app.bicep).
  // checkov:skip=CKV_AZURE_63: checkov reads every sites/config resource as the site's web configuration; this one is 'appsettings' and holds none (the site itself is checked in function-app.bicep).
  // checkov:skip=CKV_AZURE_65: checkov reads every sites/config resource as the site's web configuration; this one is 'appsettings' and holds none (the site itself is checked in function-app.bicep).
  // checkov:skip=CKV_AZURE_66: checkov reads every sites/config resource as the site's web configuration; this one is 'appsettings' and holds none (the site itself is checked in function-app.bicep).
  // checkov:skip=CKV_AZURE_80: checkov reads every sites/config resource as the site's web configuration; this one is 'appsettings' and holds none (the site itself is checked in function-app.bicep).
  // checkov:skip=CKV_AZURE_88: checkov reads every sites/config resource as the site's web configuration; this one is 'appsettings' and holds none (the site itself is checked in function-app.bicep).
  // checkov:skip=CKV_AZURE_222: checkov reads every sites/config resource as the site's web configuration; this one is 'appsettings' and holds none (the site itself is checked in function-app.bicep).
  parent: site
  name: 'appsettings'
  // Overrides come last: an MSSP changes any non-secret setting without editing this file.
  properties: union(appSettingValues, settingOverrides)
}
