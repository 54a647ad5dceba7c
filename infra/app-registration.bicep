metadata description = 'The MSSP\'s multi-tenant Entra application that customers consent to (alert read permissions only, no secret: the function app\'s managed identity is its federated credential), and Mail.Send for the function app\'s identity in the MSSP\'s own tenant. Uses the Microsoft Graph Bicep extension (bicepconfig.json), which is fetched from the Bicep registry (mcr.microsoft.com) when the template is built.'

extension microsoftGraphV1

@description('Required. Immutable unique name of the application in the MSSP\'s tenant (the key the extension upserts by).')
param uniqueName string

@description('Required. Display name customers see on the consent screen.')
param displayName string

@description('Required. Consent callback URL: https://<function app host>/api/consent/callback.')
param redirectUri string

@description('Required. Object (principal) id of the function app\'s user-assigned identity: the federated credential\'s subject and the Mail.Send assignee.')
param managedIdentityPrincipalId string

@description('Optional. Audience of the managed identity token the application trusts (api://AzureADTokenExchangeUSGov or ...China in sovereign clouds).')
param federationAudience string = 'api://AzureADTokenExchange'

@description('Optional. Grant Microsoft Graph Mail.Send (application) to the function app\'s identity in this tenant. Off by default: it can send as any mailbox; create an application access policy for the sender mailbox before turning it on, or use Exchange Online RBAC for Applications instead and leave it off (infra/README.md).')
param grantMailSend bool = false

// First-party application ids and app role ids: the same in every tenant.
var graphAppId = '00000003-0000-0000-c000-000000000000' // Microsoft Graph
var defenderAppId = 'fc780465-2017-40d4-a0c5-307022471b92' // WindowsDefenderATP (Defender for Endpoint API)
var graphSecurityAlertReadAll = '472e4a4d-bb4a-4026-98d1-0b0d74cb74a5' // Graph SecurityAlert.Read.All (application)
var defenderAlertReadAll = '71fe6b80-7034-4028-9ed8-0f316df9c3ff' // WindowsDefenderATP Alert.Read.All (application)
var graphMailSend = 'b633e1c5-b582-4048-a93e-9f11b44c7e96' // Graph Mail.Send (application)
var graphOpenId = '37f7f235-527c-4136-accd-4a02d197296e' // Graph openid (delegated): sign the admin in
var graphProfile = '14dad69e-099b-42c9-810b-d002981feec1' // Graph profile (delegated): the id_token's oid

resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMultipleOrgs'
  // The consent sign-in's id_token carries the user's directory roles (`wids`), so the callback can require
  // an administrator who may grant the consent (docs/SECURITY.md).
  groupMembershipClaims: 'DirectoryRole'
  web: {
    redirectUris: [
      redirectUri
    ]
    // The consent callback proves which tenant consented with an id_token (implicit flow, form_post) when an
    // invitation named none (docs/SECURITY.md); no access token is ever issued this way.
    implicitGrantSettings: {
      enableAccessTokenIssuance: false
      enableIdTokenIssuance: true
    }
  }
  // Only what reading alerts needs, plus signing the consenting admin in: a customer's consent grants these two
  // application permissions and the openid and profile sign-in scopes, nothing else.
  requiredResourceAccess: [
    {
      resourceAppId: graphAppId
      resourceAccess: [
        {
          id: graphSecurityAlertReadAll
          type: 'Role'
        }
        {
          id: graphOpenId
          type: 'Scope'
        }
        {
          id: graphProfile
          type: 'Scope'
        }
      ]
    }
    {
      resourceAppId: defenderAppId
      resourceAccess: [
        {
          id: defenderAlertReadAll
          type: 'Role'
        }
      ]
    }
  ]

  // The function app proves itself as this application with its managed identity's token: no secret exists.
  resource functionAppIdentity 'federatedIdentityCredentials@v1.0' = {
    name: '${application.uniqueName}/function-app-identity'
    description: 'The function app\'s user-assigned managed identity.'
    issuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
    subject: managedIdentityPrincipalId
    audiences: [
      federationAudience
    ]
  }
}

// Microsoft Graph's service principal in the MSSP's tenant (it exists in every tenant).
resource graphServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

// Mail.Send goes to the function app's identity in the MSSP's own tenant, never to the multi-tenant app.
resource mailSend 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (grantMailSend) {
  principalId: managedIdentityPrincipalId
  resourceId: graphServicePrincipal.id
  appRoleId: graphMailSend
}

@description('Application (client) id of the multi-tenant app: MSSP_APP_CLIENT_ID and the client_id of consent links.')
output clientId string = application.appId

@description('Object id of the application.')
output objectId string = application.id
