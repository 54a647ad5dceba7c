// Parameters of main.bicep. azd sets AZURE_ENV_NAME; with az, export it or edit the default.
// Everything not named here keeps main.bicep's default (which equals the code's default).
using 'main.bicep'

param environmentName = readEnvironmentVariable('AZURE_ENV_NAME', 'msspalerts')

// Scale: 2 GB instances and at most 100 of them suit up to a few thousand tenants on a 5-minute schedule.
param instanceMemoryMB = 2048
param maximumInstanceCount = 100

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
