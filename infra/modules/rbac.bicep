metadata description = 'Role assignments of the function app\'s identity, each on the narrowest scope that works: the storage account, Application Insights and the Key Vault.'

@description('Required. Object (principal) id of the user-assigned identity.')
param principalId string

@description('Required. Name of the storage account (host, Durable task hub, deployment package, app tables).')
param storageAccountName string

@description('Required. Name of the Application Insights component.')
param applicationInsightsName string

@description('Required. Name of the Key Vault.')
param keyVaultName string

@description('Optional. Object id of the principal running the deployment, granted Key Vault Secrets Officer on the vault (storing the optional secrets, make deploy\'s siem-token-key). Empty: no grant.')
param deployerPrincipalId string = ''

@description('Optional. Type of deployerPrincipalId (User, ServicePrincipal or Group).')
param deployerPrincipalType string = 'User'

var roles = {
  // Storage Blob Data Owner: host leases and timer state, Durable large payloads, the deployment package.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // Storage Queue Data Contributor: Durable control and work-item queues, and ingestion's queue (the timer sends
  // and reads the queue's length, the queue trigger receives, deletes and moves poison messages).
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // Storage Table Data Contributor: Durable history and instances, and the app's own tables.
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // Monitoring Metrics Publisher: telemetry to Application Insights with local auth disabled.
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  // Key Vault Secrets User: resolve Key Vault references in app settings.
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

// Key Vault Secrets Officer, for the deployer only: create and rotate the secrets (read, write, delete; no access policy or role rights).
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/security#key-vault-secrets-officer
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// Storage Blob Data Owner on the storage account.
resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    description: 'Function app identity: host blobs, Durable payloads, deployment package.'
  }
}

// Storage Queue Data Contributor on the storage account.
resource queueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    description: 'Function app identity: Durable queues, ingestion queue.'
  }
}

// Storage Table Data Contributor on the storage account.
resource tableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    description: 'Function app identity: Durable tables and the app tables.'
  }
}

// Monitoring Metrics Publisher on Application Insights.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    description: 'Function app identity: telemetry with Entra authentication.'
  }
}

// Key Vault Secrets User on the Key Vault.
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    description: 'Function app identity: Key Vault references.'
  }
}

// Key Vault Secrets Officer on the Key Vault, for the principal running the deployment (optional).
resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    description: 'Deployer: stores the app\'s optional secrets and siem-token-key (infra/README.md).'
  }
}
