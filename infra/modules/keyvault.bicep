metadata description = 'Key Vault for the secrets that stay optional: the onboarding webhook signing secret and, only with MSSP_APP_CREDENTIAL=secret or certificate, the multi-tenant app\'s credential. RBAC mode; the app reads through Key Vault references.'

@description('Required. Key Vault name (3-24 letters, digits and hyphens, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Required. Azure region.')
param location string

@description('Optional. Tags for the vault.')
param tags object = {}

@description('Optional. Purge protection: a deleted vault or secret cannot be purged before softDeleteRetentionInDays end. Irreversible once on; off only for environments torn down and recreated under the same name (azd down --purge).')
param enablePurgeProtection bool = true

@description('Optional. Days a deleted vault or secret can be recovered.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: Key Vault references from a function app without VNet integration resolve over the public endpoint; access is by Entra ID RBAC only.
  // checkov:skip=CKV_AZURE_189: public network access is needed for the same reason as CKV_AZURE_109.
  // checkov:skip=CKV_AZURE_110: purge protection is the enablePurgeProtection parameter, true by default (main.bicep keyVaultPurgeProtection; tests/infra checks the default); checkov cannot read a parameter's value.
  // checkov:skip=CKV_AZURE_42: recoverable means soft delete (always on) plus purge protection, which is the enablePurgeProtection parameter, true by default; checkov cannot read a parameter's value.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // The service accepts only true or no value: false is refused, even on a vault that never had it
    // (https://learn.microsoft.com/azure/templates/microsoft.keyvault/vaults).
    enablePurgeProtection: enablePurgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

@description('Resource id of the vault.')
output resourceId string = vault.id

@description('Name of the vault.')
output name string = vault.name

@description('Vault URI (ends with a slash), the base of every Key Vault reference.')
output uri string = vault.properties.vaultUri
