metadata description = 'The Flex Consumption (FC1) plan and the Linux function app (Python 3.11) running as the user-assigned identity. App settings are a separate child resource (app-settings.bicep) so they can use values known only after the site exists, such as the multi-tenant app\'s client id.'

@description('Required. Function app name (globally unique; the host name is derived from it).')
param name string

@description('Required. Flex Consumption plan name.')
param planName string

@description('Required. Azure region (one that offers Flex Consumption).')
param location string

@description('Optional. Tags for the plan and the site; the site also gets azd-service-name.')
param tags object = {}

@description('Required. Resource id of the user-assigned managed identity the app runs as.')
param identityResourceId string

@description('Required. URL of the blob container that holds the deployment package.')
param deploymentContainerUrl string

// 2048: one Python worker uses about one vCPU, which 2,048 MB gives (docs/CAPACITY.md, "The values set").
@description('Optional. Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// 40, the lowest Flex allows: the model needs 28-32 instances at the ~90,000 tenants a tick can take, and more only
// push the Tenants partition past its target (docs/CAPACITY.md, "The values set").
@description('Optional. Maximum number of instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Optional. The azd service name of the app (azure.yaml).')
param azdServiceName string = 'api'

// requirements.txt and the local platform pin Python 3.11; the runtime lives here, not in app settings.
var pythonVersion = '3.11'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy is regional and opt-in; a zone outage delays a tick, and the task hub and cursors in storage make the next tick resume without loss.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: client certificates cannot be presented by a browser following Entra's consent redirect.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales by maximumInstanceCount; there is no plan-level failover setting.
  // checkov:skip=CKV_AZURE_213: health check evicts instances behind the load balancer of dedicated plans; Flex Consumption manages its instances, and GET /api/health serves external probes.
  // checkov:skip=CKV_AZURE_222: public network access is the product: Entra redirects customers' browsers to the consent callback.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': azdServiceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityResourceId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityResourceId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// Publishing uses Entra ID (az login / func publish with the signed-in user); no basic-auth credentials exist.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

@description('Resource id of the function app.')
output resourceId string = site.id

@description('Name of the function app (what func azure functionapp publish takes).')
output name string = site.name

@description('Default host name of the function app, without scheme.')
output defaultHostName string = site.properties.defaultHostName
