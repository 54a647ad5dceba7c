"""Resolve a customer's verified domain to its tenant GUID through the authority's OpenID metadata
(`{authority}/{domain}/v2.0/.well-known/openid-configuration`: the GUID is the path segment of `issuer`).

Used when an onboarding request names the tenant by domain: consent callbacks carry the GUID, and the
invited tenant must match it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, urlsplit

import requests

from shared.validators import is_guid

logger = logging.getLogger(__name__)

_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")


class TenantNotFound(LookupError):
    """The authority knows no tenant by that name."""


class LookupUnavailable(RuntimeError):
    """The authority could not be asked (network, 5xx, malformed answer)."""


def is_domain(value: str) -> bool:
    return bool(_DOMAIN.fullmatch(value.lower()))


def resolve_tenant_id(authority_host: str, domain: str, *, session: requests.Session | None = None,
                      timeout: float = 30.0) -> str:
    """The tenant GUID behind `domain` (a GUID is returned as is, lower-cased)."""
    if is_guid(domain):
        return domain.lower()
    url = f"{authority_host}/{quote(domain.lower(), safe='')}/v2.0/.well-known/openid-configuration"
    http = session or requests
    try:
        response = http.get(url, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise LookupUnavailable(f"authority unreachable: {type(exc).__name__}") from None
    if response.status_code in (400, 404):
        raise TenantNotFound(domain)
    if response.status_code != 200:
        raise LookupUnavailable(f"authority answered {response.status_code}")
    try:
        issuer = str(response.json()["issuer"])
    except (ValueError, KeyError, TypeError):
        raise LookupUnavailable("authority metadata has no issuer") from None
    segments = [s for s in urlsplit(issuer).path.split("/") if s]
    tenant_id = next((s.lower() for s in segments if is_guid(s.lower())), None)
    if tenant_id is None:
        raise LookupUnavailable("issuer carries no tenant id")
    logger.info("resolved domain %s to tenant %s", domain, tenant_id)
    return tenant_id
