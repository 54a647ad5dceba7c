metadata description = 'The storage account: Functions host and Durable task hub (blobs, queues, tables), the Flex deployment package container, and the app\'s own tables. Keys are disabled; every client uses Entra ID.'

@description('Required. Storage account name (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Required. Azure region.')
param location string

@description('Optional. Tags for the account.')
param tags object = {}

@description('Optional. Replication. Locally redundant by default: zone-redundant storage is not offered in every Flex Consumption region (https://learn.microsoft.com/azure/storage/common/redundancy-regions-zrs); choose Standard_ZRS where it is, since the account holds the app\'s data (tenants, alerts, delivery log), not only host state.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_LRS'

@description('Required. Name of the blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string

@description('Required. Full names (prefix included) of the app\'s tables, created here so the app never needs table-create rights at runtime.')
param tableNames array

@description('Optional. Names of the app\'s own queues (ingestion\'s per-tenant work queue and its poison queue), created here like the tables; the app creates a missing work queue too.')
param queueNames array = []

@description('Optional. Days a deleted blob or container can be restored (the deployment package, host leases).')
@minValue(1)
@maxValue(365)
param blobSoftDeleteDays int = 7

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches storage over its public endpoint; access is by Entra ID only (shared keys disabled).
  // checkov:skip=CKV_AZURE_59: public network access is needed for the same reason as CKV_AZURE_35; anonymous blob access is disabled separately (allowBlobPublicAccess).
  // checkov:skip=CKV_AZURE_206: replication is skuName (locally redundant by default, zone- or geo-redundant on request); alerts can be fetched again from Microsoft, so geo-copies are an MSSP's choice, not a default.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: { enabled: true }
        file: { enabled: true }
        queue: { enabled: true, keyType: 'Account' }
        table: { enabled: true, keyType: 'Account' }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: blobSoftDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: blobSoftDeleteDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

@description('Resource id of the account.')
output resourceId string = account.id

@description('Name of the account.')
output name string = account.name

@description('Blob endpoint (ends with a slash).')
output blobEndpoint string = account.properties.primaryEndpoints.blob

@description('Queue endpoint (ends with a slash).')
output queueEndpoint string = account.properties.primaryEndpoints.queue

@description('Table endpoint (ends with a slash).')
output tableEndpoint string = account.properties.primaryEndpoints.table

@description('URL of the deployment package container.')
output deploymentContainerUrl string = '${account.properties.primaryEndpoints.blob}${deploymentContainer.name}'
