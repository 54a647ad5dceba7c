"""The SIEM pull API's request (`GET /api/alerts`, docs/ARCHITECTURE.md "SIEM pull"): the query string
validated into a `PullRequest`, and the continuation token it may carry verified with SIEM_TOKEN_KEY
(fetch_alerts/siem_token.py). A bad value is a 400 naming the parameter; a forged, damaged or foreign token
is a 400, never a 5xx or a position outside the feed. Without the key the API answers 503 rather than hand
out tokens it could not verify.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from fetch_alerts.siem_token import SEVERITIES, STATUSES, Filters, Position, TokenInvalid, bad_token, decode_token
from shared.problems import Problem
from shared.settings import SettingsError
from shared.validators import is_guid

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_PAGE_SIZE_WITH_PAYLOAD = 100
NDJSON = "application/x-ndjson"
ALLOWED_PARAMETERS = {"tenantId", "severity", "status", "pageSize", "continuation", "includePayload", "code"}
# A parameter name is named back in a problem only when it looks like one: never arbitrary caller text.
_PARAMETER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_QUALITY = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")  # RFC 9110 qvalue


@dataclass(frozen=True)
class PullRequest:
    filters: Filters
    position: Position
    page_size: int
    include_payload: bool
    ndjson: bool


def _choices(raw: str, allowed: tuple[str, ...], name: str) -> tuple[str, ...]:
    known = {value.lower() for value in allowed}
    chosen: list[str] = []
    for part in raw.split(","):
        value = part.strip().lower()
        if value not in known:
            raise Problem(400, f"must be a comma-separated list of {', '.join(allowed)}", field=name)
        if value not in chosen:
            chosen.append(value)
    return tuple(sorted(chosen))


def _page_size(raw: str | None, include_payload: bool) -> int:
    limit = MAX_PAGE_SIZE_WITH_PAYLOAD if include_payload else MAX_PAGE_SIZE
    if raw is None:
        return min(DEFAULT_PAGE_SIZE, limit)
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= limit:
        raise Problem(400, f"must be an integer from 1 to {limit}", field="pageSize")
    return int(raw)


def _wants_ndjson(accept: str | None) -> bool:
    """NDJSON when the Accept header names it (with a non-zero q); JSON otherwise."""
    for media_range in (accept or "").split(","):
        media, *params = (p.strip() for p in media_range.split(";"))
        if media.lower() == NDJSON:
            quality = next((p[2:].strip() for p in params if p.lower().startswith("q=")), "1")
            # A malformed weight still names NDJSON: the caller asked for it, so it is served.
            return not _QUALITY.fullmatch(quality) or float(quality) > 0
    return False


def parse_request(params: dict[str, str], accept: str | None, key: bytes) -> PullRequest:
    """Validate the query string; a bad value is a 400 naming the parameter. `key` verifies a token."""
    unknown = sorted(set(params) - ALLOWED_PARAMETERS)
    if unknown:
        name = unknown[0]
        raise Problem(400, f"unknown parameter; use {', '.join(sorted(ALLOWED_PARAMETERS - {'code'}))}",
                      field=name if _PARAMETER_NAME.fullmatch(name) else None)
    include_raw = params.get("includePayload", "false").strip().lower()
    if include_raw not in ("true", "false"):
        raise Problem(400, "must be true or false", field="includePayload")
    include_payload = include_raw == "true"
    tenant_id = params.get("tenantId")
    if tenant_id is not None:
        tenant_id = tenant_id.strip().lower()
        if not is_guid(tenant_id):
            raise Problem(400, "must be a tenant GUID", field="tenantId")
    filters = Filters(
        tenant_id=tenant_id,
        severities=_choices(params["severity"], SEVERITIES, "severity") if "severity" in params else (),
        statuses=_choices(params["status"], STATUSES, "status") if "status" in params else (),
    )
    position = Position()
    if "continuation" in params:
        token_filters, position = _read_token(params["continuation"], key)
        # The token carries its query (like a nextLink); filters given beside it must be the same.
        if tenant_id is None and "severity" not in params and "status" not in params:
            filters = token_filters
        elif filters != token_filters:
            raise Problem(400, "the continuation token was issued for other filters (tenantId, severity, "
                               "status); repeat the same filters or leave them out", field="continuation")
    return PullRequest(filters=filters, position=position, page_size=_page_size(params.get("pageSize"),
                       include_payload), include_payload=include_payload, ndjson=_wants_ndjson(accept))


def _read_token(token: str, key: bytes) -> tuple[Filters, Position]:
    try:
        return decode_token(token, key)
    except TokenInvalid as exc:
        if exc.authentic:  # only our encoder, or someone holding the key, makes a token that verifies
            logger.error("SIEM pull: a continuation token with a valid MAC is malformed (%s): the encoder is "
                         "broken or SIEM_TOKEN_KEY has leaked", exc)
        else:
            logger.info("SIEM pull: continuation token refused: %s", exc)
        raise bad_token() from None


def token_key(read_key: Callable[[], str]) -> bytes:
    """SIEM_TOKEN_KEY as bytes (`read_key` reads the setting); without a valid key the API refuses (503)
    instead of handing out tokens it could not verify."""
    try:
        key = read_key()
    except SettingsError as exc:  # the message names the setting, never its value
        logger.error("SIEM pull refused: %s", exc)
        raise Problem(503, "not configured: SIEM_TOKEN_KEY") from None
    if not key:
        logger.error("SIEM pull refused: SIEM_TOKEN_KEY is not set, so continuation tokens cannot be MACed")
        raise Problem(503, "not configured: SIEM_TOKEN_KEY")
    return str(key).encode("utf-8", "surrogateescape")
