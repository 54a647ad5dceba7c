"""The customer's first step of Microsoft's MSSP setup, as a page for the customer's admin: give the MSSP's
analysts access to the customer's own Microsoft Defender portal through Entra B2B (a connected organization),
Identity Governance access packages per tier with approvers, and Defender roles for Tier 1 and Tier 2
(https://learn.microsoft.com/en-us/defender-endpoint/grant-mssp-access; the analysts then open
https://security.microsoft.com/?tid=<customer tenant id>,
https://learn.microsoft.com/en-us/defender-endpoint/access-mssp-portal).

`GET /api/invitations/{invitationId}/portal-access` is anonymous: the customer's admin has no function key.
The address is unguessable (the invitation id is a random UUID, 122 random bits), answers only for an
invitation whose consent was granted (anything else is the same 404 page), and the page holds nothing
secret: the MSSP's public tenant id and domain, the names the MSSP chose (settings), and the customer's own
tenant id. It asks for no permission; every step is done by the customer's admin in their own admin centers
(docs/SECURITY.md, "Who can call what").
"""

from __future__ import annotations

import re

from grant_access import pages
from grant_access.config import PortalAccessConfig
from grant_access.invitations import ACCEPTED, Invitation, InvitationStore
from grant_access.pages import Code, Link, Section
from shared.validators import is_guid

INVITATION_ID = re.compile(r"^[0-9a-f]{32}$")
GUIDE_URL = "https://learn.microsoft.com/en-us/defender-endpoint/grant-mssp-access"
ENTRA_ADMIN_CENTER = "https://entra.microsoft.com"
MY_ACCESS = "https://myaccess.microsoft.com"


def path(invitation_id: str) -> str:
    """The page's path on this app."""
    return f"/api/invitations/{invitation_id}/portal-access"


def url(public_base_url: str, invitation_id: str) -> str:
    return f"{public_base_url}{path(invitation_id)}"


def consented_tenant(invitation: Invitation | None) -> str | None:
    """The tenant an invitation's granted consent proved, or None: the page exists only for it."""
    if invitation is None or invitation.outcome != ACCEPTED:
        return None
    tenant_id = str(invitation.row.get("tenantId") or "")
    return tenant_id.lower() if is_guid(tenant_id) else None


def entra_link(tenant_id: str, view: str = "") -> str:
    """The customer's own Entra admin center (`?tenant=` picks the directory), optionally at a blade."""
    return f"{ENTRA_ADMIN_CENTER}/?tenant={tenant_id}" + (f"#view/{view}" if view else "")


def defender_link(portal_host: str, tenant_id: str) -> str:
    return f"{portal_host}/?tid={tenant_id}"


def page_for(invitations: InvitationStore, invitation_id: str, config: PortalAccessConfig) -> pages.Page:
    """The guide for an accepted invitation's tenant; the 404 page for anything else."""
    invitation = invitations.get(invitation_id) if INVITATION_ID.fullmatch(invitation_id) else None
    tenant_id = consented_tenant(invitation)
    if invitation is None or tenant_id is None:
        return pages.portal_access_unknown()
    expected = str(invitation.row.get("expectedTenant") or "")
    domain = expected.lower() if expected and not is_guid(expected) else ""
    return guide(invitation.customer_name, tenant_id, config, customer_domain=domain)


def _mssp_tenant(config: PortalAccessConfig) -> tuple[str | Code, ...]:
    if config.mssp_tenant_id and config.mssp_tenant_domain:
        return (Code(config.mssp_tenant_id), " (", Code(config.mssp_tenant_domain), ")")
    if config.mssp_tenant_id or config.mssp_tenant_domain:
        return (Code(config.mssp_tenant_id or config.mssp_tenant_domain),)
    return ("the tenant your security provider names",)


def guide(customer: str, tenant_id: str, config: PortalAccessConfig, *, customer_domain: str = "") -> pages.Page:
    tier1, tier2, approvers = Code(config.tier1_group), Code(config.tier2_group), Code(config.approvers_group)
    defender = defender_link(config.portal_host, tenant_id)
    mssp = _mssp_tenant(config)
    my_access: str | Link | Code = (Link(f"{MY_ACCESS}/@{customer_domain}", f"{MY_ACCESS}/@{customer_domain}")
                                    if customer_domain else Code(f"{MY_ACCESS}/@<your domain>"))
    paragraphs: tuple[pages.Line, ...] = (
        "Microsoft's setup for managed security service providers starts with this step: you give your "
        "security provider's analysts access to your organization's Microsoft Defender portal. The analysts "
        "sign in as guests from their own tenant, request access through access packages, your approvers "
        "decide, and access expires unless it is renewed. You can remove it at any time.",
        "This page asks for no permission and changes nothing: you do each step yourself, in your own admin "
        "centers. The alert read access you already granted stays as it is.",
        ("Your organization's tenant ID: ", Code(tenant_id), ". Your security provider's tenant: ", *mssp, "."),
        ("Microsoft's guide: ", Link("Grant access to managed security service provider (MSSP)", GUIDE_URL),
         ". Access packages need a Microsoft Entra ID P2 or Microsoft Entra ID Governance license."),
    )
    sections = (
        Section("1. Create the groups", intro=(
            (Link("Open Groups in your Microsoft Entra admin center",
                  entra_link(tenant_id, "Microsoft_AAD_IAM/GroupsManagementMenuBlade/~/AllGroups")),
             " and create three security groups:"),), steps=(
            ("Tier 1 analysts: ", tier1),
            ("Tier 2 analysts: ", tier2),
            ("Approvers of the analysts' requests: ", approvers),
        )),
        Section("2. Give the analysts' groups Defender roles", intro=(
            (Link("Open your organization's Microsoft Defender portal", defender),
             " and go to Settings > Endpoints > Roles. Turn on roles if they are not on yet: Microsoft notes that "
             "this cannot be undone, and that users with read-only access lose it until they are given a role."),
        ), steps=(
            ("Add a role named ", tier1, " with every permission except Live response and Manage security "
             "settings, and assign it the user group ", tier1, "."),
            ("Add a role named ", tier2, " with the same permissions plus Live response, and assign it the user "
             "group ", tier2, "."),
        )),
        Section("3. Connect your security provider's tenant", intro=(
            (Link("Open Entitlement management in your Microsoft Entra admin center",
                  entra_link(tenant_id, "Microsoft_AAD_IG/EntitlementManagementMenuBlade/~/Catalogs")),
             " (ID Governance > Entitlement management)."),
        ), steps=(
            ("Connected organizations: add a connected organization and search for ", *mssp, "."),
            ("Catalogs: create a catalog named ", Code(config.catalog), " and add the three groups to its "
             "resources."),
            ("Access packages: in that catalog create three packages, ", approvers, ", ", tier1, " and ", tier2,
             ", each giving membership of the group of the same name."),
            ("For ", tier1, " and ", tier2, ": users of the connected organization may request them, a member of ",
             approvers, " approves, assignments expire after 365 days, with a yearly access review in which "
             "analysts may ask for an extension."),
            ("For ", approvers, ": users of the connected organization may request it, and your own "
             "administrators approve."),
            "Send each package's My Access portal link (on its Overview page) to your security provider. The "
            "links stay valid: new analysts request access through the same links.",
        )),
        Section("4. Approve, and what the analysts open", intro=(
            ("Approvers decide on requests under Approvals in your organization's My Access portal: ", my_access,
             "."),
            ("Approved analysts open your Defender portal at ", Link(defender, defender), "."),
        )),
    )
    title = "Portal access for your security provider" + (f" at {customer}" if customer else "")
    return pages.Page(200, title, paragraphs, sections)
