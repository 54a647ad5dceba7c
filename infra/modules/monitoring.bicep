metadata description = 'Log Analytics and workspace-based Application Insights with local (key) authentication disabled: the app sends telemetry with its managed identity.'

@description('Required. Log Analytics workspace name.')
param logAnalyticsName string

@description('Required. Application Insights component name.')
param applicationInsightsName string

@description('Required. Azure region.')
param location string

@description('Optional. Tags for both resources.')
param tags object = {}

@description('Optional. Days the workspace keeps logs, Application Insights data included (30 is included in the Log Analytics price).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Optional. Daily ingestion cap in GB for the workspace; -1 for none. A runaway log loop then costs at most this much a day.')
param dailyQuotaGb int = 5

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    workspaceCapping: {
      dailyQuotaGb: dailyQuotaGb
    }
    features: {
      disableLocalAuth: true
    }
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
    // No RetentionInDays: a workspace-based component keeps its data in the workspace, whose retentionInDays rules
    // (https://learn.microsoft.com/azure/azure-monitor/app/convert-classic-resource).
  }
}

@description('Resource id of Application Insights (scope of the Monitoring Metrics Publisher assignment).')
output applicationInsightsResourceId string = applicationInsights.id

@description('Name of Application Insights.')
output applicationInsightsName string = applicationInsights.name

@description('Connection string of Application Insights. Not a secret once local auth is disabled: ingestion needs an Entra token.')
output connectionString string = applicationInsights.properties.ConnectionString

@description('Resource id of the Log Analytics workspace.')
output logAnalyticsResourceId string = workspace.id
