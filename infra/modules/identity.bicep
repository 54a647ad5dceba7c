metadata description = 'The function app\'s user-assigned managed identity: storage, telemetry, Key Vault, mail and the federated credential of the multi-tenant app all trust this one principal.'

@description('Required. Name of the user-assigned managed identity.')
param name string

@description('Required. Azure region.')
param location string

@description('Optional. Tags for the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity.')
output resourceId string = identity.id

@description('Name of the identity.')
output name string = identity.name

@description('Client (application) id: AZURE_CLIENT_ID and the AzureWebJobsStorage__clientId of the app.')
output clientId string = identity.properties.clientId

@description('Object (principal) id: the subject of role assignments and of the federated identity credential.')
output principalId string = identity.properties.principalId
