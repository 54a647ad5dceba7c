// Standalone deployment of the app registration (the second phase when main.bicep runs with
// createAppRegistration = false; see infra/README.md). Values come from main.bicep's outputs.
using 'app-registration.bicep'

param uniqueName = readEnvironmentVariable('MSSP_APP_UNIQUE_NAME', 'mssp-defender-alerts')
param displayName = readEnvironmentVariable('MSSP_APP_DISPLAY_NAME', 'MSSP Defender alerts')
param redirectUri = readEnvironmentVariable('CONSENT_CALLBACK_URL')
param managedIdentityPrincipalId = readEnvironmentVariable('MANAGED_IDENTITY_PRINCIPAL_ID')
