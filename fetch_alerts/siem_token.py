"""The SIEM pull API's continuation token: the filters a page was read with and the position after it.

Format (version 2): `2.<payload>.<mac>`, all ASCII.
- `payload`: unpadded base64url of compact, key-sorted UTF-8 JSON
  `{"f": {"t": <tenant GUID or null>, "sev": [<severity>...], "st": [<status>...]},
    "p": [<partition>, <key>, <index or null>]}`
  (filters lower-case, sorted, without repeats; the position is what `Position` documents).
- `mac`: unpadded base64url of HMAC-SHA256(SIEM_TOKEN_KEY, CONTEXT + "2." + payload), over the text as sent.

The MAC makes the token unforgeable without the key and the check costs one HMAC over at most
MAX_TOKEN_LENGTH bytes before anything is decoded. A token depends on nothing but the key, so it survives
restarts and works on every instance; changing the key invalidates every outstanding token (the SIEM
starts again from the beginning). After the MAC is verified every field is still validated strictly, so a
leaked key or an encoder bug yields a 400, never a 5xx or a position outside the feed. The leading version
lets the format change later: a token of an unknown version is refused like a damaged one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from shared.alerts import FEED_KEY_PATTERN
from shared.problems import Problem
from shared.validators import is_guid

logger = logging.getLogger(__name__)

VERSION = "2"
# Far above the longest token the encoder makes (~600 characters), far below a URL's limits.
MAX_TOKEN_LENGTH = 1024
_CONTEXT = b"mssp-alerts siem continuation\n"  # the key MACs nothing else, but the domain stays separate
_TOKEN = re.compile(r"([0-9]{1,3})\.([A-Za-z0-9_-]{1,1000})\.([A-Za-z0-9_-]{43})")
# The valid payload nests three levels and holds five containers; brackets are never inside its strings.
_MAX_CONTAINERS = 5

# Graph's spellings, as stored (fetch_alerts/STORAGE.md); filters compare case-insensitively.
SEVERITIES = ("informational", "low", "medium", "high", "unknown", "unknownFutureValue")
STATUSES = ("new", "inProgress", "resolved", "unknown", "unknownFutureValue")
_SEVERITIES_LOWER = frozenset(value.lower() for value in SEVERITIES)
_STATUSES_LOWER = frozenset(value.lower() for value in STATUSES)

TENANT_FEED_KEY = re.compile(FEED_KEY_PATTERN)
# The reader parses stored AlertFeed RowKeys with this too, so it is exactly as lenient as it always was.
GLOBAL_KEY = re.compile(rf"([0-9]{{20}})\|([0-9a-f-]{{36}})\|({FEED_KEY_PATTERN})")
MINUTE = re.compile(r"[0-9]{12}")
MAX_INDEX = 100  # a tenant feed row shares a transaction of at most 100 operations with the versions it lists


@dataclass(frozen=True)
class Filters:
    tenant_id: str | None = None
    severities: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()

    def matches(self, row: dict[str, Any]) -> bool:
        if self.severities and str(row.get("severity", "")).lower() not in self.severities:
            return False
        return not self.statuses or str(row.get("status", "")).lower() in self.statuses


@dataclass(frozen=True)
class Position:
    """Where a SIEM is in a feed: the feed row last touched (`key`, in partition `partition` for the
    global feed) and the index of the next entry of that row to serve (None: the row is fully served)."""

    partition: str = ""
    key: str = ""
    index: int | None = None


class TokenInvalid(Exception):
    """Why a token was refused; for the log only, the caller answers the same 400 whatever the reason.
    `authentic`: its MAC verified, so our encoder or a holder of the key made it."""

    def __init__(self, reason: str, *, authentic: bool = False) -> None:
        super().__init__(reason)
        self.authentic = authentic


def bad_token() -> Problem:
    """The one answer to every refused token: the reason is logged, never told."""
    return Problem(400, "invalid continuation token; start again without it or use the token of the last page",
                   field="continuation")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _mac(key: bytes, signed: str) -> str:
    return _b64encode(hmac.new(key, _CONTEXT + signed.encode("ascii"), hashlib.sha256).digest())


def encode_token(filters: Filters, position: Position, key: bytes) -> str:
    body = {"f": {"t": filters.tenant_id, "sev": list(filters.severities), "st": list(filters.statuses)},
            "p": [position.partition, position.key, position.index]}
    signed = f"{VERSION}.{_b64encode(json.dumps(body, separators=(',', ':'), sort_keys=True).encode())}"
    return f"{signed}.{_mac(key, signed)}"


def decode_token(token: str, key: bytes) -> tuple[Filters, Position]:
    """The filters and position of a token this deployment issued; TokenInvalid for anything else."""
    # Cheap checks first: the length and alphabet bound the MAC's work and make the text ASCII.
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenInvalid("too long")
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise TokenInvalid("not a token")
    version, payload, mac = match.groups()
    if not hmac.compare_digest(_mac(key, f"{version}.{payload}"), mac):
        raise TokenInvalid("MAC does not verify")
    # Only our own encoder gets past here, unless the key leaked: everything is still checked.
    try:
        if version != VERSION:
            raise TokenInvalid(f"version {version} is not supported")
        return _parse_body(_json_body(payload))
    except TokenInvalid as exc:
        raise TokenInvalid(str(exc), authentic=True) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body = dict(pairs)
    if len(body) != len(pairs):
        raise ValueError("a key is repeated")
    return body


def _json_body(payload: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise TokenInvalid("payload is not base64url UTF-8") from None
    # Deep nesting would exhaust the parser's recursion; no valid payload has more than a few containers.
    if text.count("[") + text.count("{") > _MAX_CONTAINERS:
        raise TokenInvalid("payload nests too much")
    try:
        body = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError):
        raise TokenInvalid("payload is not JSON") from None
    if not isinstance(body, dict):
        raise TokenInvalid("payload is not an object")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choices(value: Any, allowed: frozenset[str], name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v in allowed for v in value):
        raise TokenInvalid(f"{name} is not a list of allowed values")
    if value != sorted(set(value)):
        raise TokenInvalid(f"{name} is not sorted and unique")
    return tuple(value)


def _parse_body(body: dict[str, Any]) -> tuple[Filters, Position]:
    if set(body) != {"f", "p"}:
        raise TokenInvalid("payload fields")
    raw_filters, raw_position = body["f"], body["p"]
    if not isinstance(raw_filters, dict) or set(raw_filters) != {"t", "sev", "st"}:
        raise TokenInvalid("filter fields")
    tenant_id = raw_filters["t"]
    if tenant_id is not None and not (is_guid(tenant_id) and tenant_id == tenant_id.lower()):
        raise TokenInvalid("tenant")
    filters = Filters(tenant_id=tenant_id, severities=_choices(raw_filters["sev"], _SEVERITIES_LOWER, "severities"),
                      statuses=_choices(raw_filters["st"], _STATUSES_LOWER, "statuses"))
    if not isinstance(raw_position, list) or len(raw_position) != 3:
        raise TokenInvalid("position shape")
    partition, key, index = raw_position
    if not isinstance(partition, str) or not isinstance(key, str):
        raise TokenInvalid("position keys")
    if index is not None and not (_is_int(index) and 0 <= index < MAX_INDEX):
        raise TokenInvalid("position index")
    if tenant_id is not None:  # a tenant's own feed: RowKeys of its partition, no minute partition
        valid = partition == "" and (key == "" or TENANT_FEED_KEY.fullmatch(key) is not None)
    else:  # the global feed: a minute partition and a RowKey in it, or the very start
        valid = (partition == "" and key == "") or (
            MINUTE.fullmatch(partition) is not None and GLOBAL_KEY.fullmatch(key) is not None)
    if not valid or (key == "" and index is not None):
        raise TokenInvalid("position")
    return filters, Position(partition, key, index)
