// Standalone deployment of the app registration (the second phase when main.bicep runs with
// createAppRegistration = false; see infra/README.md). Values come from main.bicep's outputs.
using 'app-registration.bicep'

// The same default as main.bicep's msspAppUniqueName ('mssp-defender-alerts-<environment name>'), so either entry
// point updates the same application. Releases before this default used 'mssp-defender-alerts': an app registered
// with it keeps that name through MSSP_APP_UNIQUE_NAME=mssp-defender-alerts.
param uniqueName = readEnvironmentVariable('MSSP_APP_UNIQUE_NAME', 'mssp-defender-alerts-${readEnvironmentVariable('AZURE_ENV_NAME', 'msspalerts')}')
param displayName = readEnvironmentVariable('MSSP_APP_DISPLAY_NAME', 'MSSP Defender alerts')
param redirectUri = readEnvironmentVariable('CONSENT_CALLBACK_URL')
param managedIdentityPrincipalId = readEnvironmentVariable('MANAGED_IDENTITY_PRINCIPAL_ID')
