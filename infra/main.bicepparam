// Parameters of main.bicep. azd sets AZURE_ENV_NAME; with az, export it or edit the default.
// Everything not named here keeps main.bicep's default (which equals the code's default).
using 'main.bicep'

param environmentName = readEnvironmentVariable('AZURE_ENV_NAME', 'msspalerts')

// Who deploys: granted Key Vault Secrets Officer so the secrets (infra/README.md, make deploy's siem-token-key) can be
// stored. azd sets both variables; make deploy sets them from `az login`. Empty: no grant.
param deployerPrincipalId = readEnvironmentVariable('AZURE_PRINCIPAL_ID', '')
param deployerPrincipalType = readEnvironmentVariable('AZURE_PRINCIPAL_TYPE', 'User')

// Storage redundancy: Standard_LRS by default (ZRS is not offered in every Flex Consumption region). Where ZRS is
// offered, or for an account first created zone-redundant, set STORAGE_SKU_NAME=Standard_ZRS.
param storageSkuName = readEnvironmentVariable('STORAGE_SKU_NAME', 'Standard_LRS')

// Key Vault: after tearing the resource group down, a redeploy needs a new vault name (the deleted vault keeps its
// name for 90 days): set KEY_VAULT_NAME_SALT to any new lower-case letters or digits, e.g. 2.
param keyVaultNameSalt = readEnvironmentVariable('KEY_VAULT_NAME_SALT', '')

// Scale: 2 GB instances and at most 40 of them ingest up to about 90,000 tenants per 5-minute tick; the model and its
// limits are in docs/CAPACITY.md.
param instanceMemoryMB = 2048
param maximumInstanceCount = 40

// Schedules (six-field NCRONTAB, UTC).
param fetchAlertsSchedule = '0 */5 * * * *'
param verificationSchedule = '0 */2 * * * *'
param retentionSchedule = '0 30 3 * * *'

// Any other setting of shared/settings.py, by name (strings), e.g. more tenants fetched in parallel:
param settingOverrides = {
  FETCH_CONCURRENCY: '16'
}

// E-mail to the MSSP: Graph sendMail from this mailbox (restrict Mail.Send to it: infra/README.md).
param mailTransport = 'graph'
param mailSender = readEnvironmentVariable('MAIL_SENDER', 'defender-alerts@mssp.example')
param opsEmail = readEnvironmentVariable('OPS_EMAIL', '')

// The app registration and Mail.Send in this deployment (needs Graph rights; infra/README.md).
param createAppRegistration = true
param msspAppDisplayName = readEnvironmentVariable('MSSP_APP_DISPLAY_NAME', 'MSSP Defender alerts')
param msspAppCredential = 'federated'

// Optional secrets, stored in the Key Vault after the first deployment (infra/README.md):
// param keyVaultSecretNames = {
//   ONBOARDING_WEBHOOK_SECRET: 'onboarding-webhook-secret'
// }
